"""A headless Chromium that checks a report page: it loads the page from the file system, and a script run after
the load records every image's decoded width and visible size and every table's row count; and a screenshot of
the page's first screen.

``python -m analysis.browser check REPORT.html`` prints that record as JSON; ``python -m analysis.browser
screenshot REPORT.html OUT.png`` writes the screenshot. Needs Debian's ``chromium`` package.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
]
PROBE = """<script>
window.addEventListener("load", function () {
  var images = Array.prototype.map.call(document.images, function (img) {
    var box = img.getBoundingClientRect(), style = getComputedStyle(img);
    return {alt: img.alt, natural: img.naturalWidth, width: box.width, height: box.height,
            visible: style.visibility !== "hidden" && style.display !== "none" && box.width > 0 && box.height > 0};
  });
  var tables = Array.prototype.map.call(document.querySelectorAll("table"), function (t) {
    var box = t.getBoundingClientRect();
    return {rows: t.querySelectorAll("tbody tr").length, width: box.width, height: box.height};
  });
  var out = document.createElement("pre");
  out.id = "render-check";
  out.textContent = JSON.stringify({images: images, tables: tables});
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str | None:
    """The Chromium executable, or None when it is not installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(args: list[str], timeout: float) -> str:
    exe = chromium()
    if exe is None:
        raise RuntimeError("chromium is not installed (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="hpobench-chromium-") as profile:
        result = subprocess.run(
            [exe, *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    if result.returncode != 0:
        raise RuntimeError(f"chromium exited {result.returncode}: {result.stderr[-2000:]}")
    return result.stdout


def check(page: Path, timeout: float = 180) -> dict[str, Any]:
    """Load a copy of ``page`` with the probe script added and return what it recorded: ``images`` (alt, natural
    width, shown width and height, visible) and ``tables`` (body rows, width, height)."""
    text = Path(page).read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="hpobench-check-") as tmp:
        probe = Path(tmp) / "page.html"
        probe.write_text(text.replace("</body>", PROBE + "</body>"), encoding="utf-8")
        dom = _run(["--virtual-time-budget=10000", "--window-size=1400,1000", "--dump-dom", probe.as_uri()], timeout)
    found = re.search(r'<pre id="render-check">(.*?)</pre>', dom, re.S)
    if not found:
        raise RuntimeError("the page's load event never ran the check script")
    return json.loads(html.unescape(found.group(1)))


def screenshot(page: Path, out: Path, size: tuple[int, int] = (1280, 800), timeout: float = 180) -> Path:
    """A PNG of the first ``size`` pixels of ``page`` as Chromium shows it."""
    out = Path(out).resolve()
    _run([f"--screenshot={out}", f"--window-size={size[0]},{size[1]}", Path(page).resolve().as_uri()], timeout)
    return out


def main(argv: list[str]) -> int:
    """Command line: ``check PAGE`` or ``screenshot PAGE OUT``."""
    if len(argv) == 2 and argv[0] == "check":
        print(json.dumps(check(Path(argv[1])), indent=1))
        return 0
    if len(argv) == 3 and argv[0] == "screenshot":
        print(f"wrote {screenshot(Path(argv[1]), Path(argv[2]))}")
        return 0
    print("usage: python -m analysis.browser check PAGE | screenshot PAGE OUT", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
