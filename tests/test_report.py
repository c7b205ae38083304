"""``report``: one self-contained HTML page, checked in a real headless Chromium (Debian's ``chromium``; .ci/run
installs it, and sets HPOBENCH_REQUIRE_BROWSER so that a missing browser fails there instead of skipping)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from analysis import browser
from tests.runfolders import write_run

ROOT = Path(__file__).resolve().parent.parent
NEW_PROTOCOL = {
    "clock": "cpu",
    "trial_epochs": 3,
    "threads": 1,
    "cost_factors": {"stn_step": 2.0},
    "git": {"commit": "0123456789abcdef", "dirty": False},
    "device": {"machine": "x86_64", "cpu_count": 2, "platform": "Linux-test"},
    "versions": {"python": "3.11.7", "torch": "2.14.1"},
}
NEW_SUMMARY = {
    "cpu_seconds": 55.0,
    "wall_seconds": 70.0,
    "load_average_start": [1.0, 0.5, 0.25],
    "load_average_end": [2.0, 1.5, 1.25],
}


def _runs(root):
    for method, base in (("stn", 1.0), ("random", 1.5), ("grid", 1.6)):
        hparams = (lambda e: {"dropout": 0.1 * e}) if method == "stn" else None
        for seed in range(3):
            v = base + 0.1 * seed
            reports = [(1.0, 1, v + 1, 0.8), (2.0, 2, v, 1.6)]
            write_run(root, method, seed, v, v, reports, hparams=hparams)  # recorded before the protocol fields
            write_run(
                root,
                method,
                seed,
                v,
                v,
                reports,
                hparams=hparams,
                budget="60s",
                meta_extra=NEW_PROTOCOL,
                summary_extra=NEW_SUMMARY,
            )


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    _runs(root / "runs")
    pages = []
    for out in ("a", "b"):
        result = subprocess.run(
            [sys.executable, "-m", "hpobench_stn", "report", "--runs", str(root / "runs"), "--out", str(root / out)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr
        pages.append(root / out / "report.html")
    return pages


def test_the_report_is_one_self_contained_page(report):
    page = report[0].read_text()
    assert report[0].read_bytes() == report[1].read_bytes()  # the same runs give the same bytes
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert sources and all(s.startswith(("data:image/png;base64,", "#")) for s in sources), sources
    assert "<script" not in page and "http://" not in page and "https://" not in page
    group = page.split('id="toy-cpu-10ep"')[1].split("</section>")[0]
    for kind in ("anytime", "rank", "ttq", "schedules"):
        assert f'alt="{kind}: ' in group, kind
    # per group: anytime and rank in each of the three units, time to quality, schedules
    assert group.count("<img ") == 8 and page.count("<img ") == 16
    assert "two-sided Mann-Whitney U" in page and "no difference can be detected" in page


def test_the_protocol_shows_what_runs_recorded_and_says_what_they_did_not(report):
    page = report[0].read_text()
    new = page.split('id="toy-cpu-60s"')[1]
    old = page.split('id="toy-cpu-10ep"')[1].split('id="toy-cpu-60s"')[0]
    for text in (
        "60s (60 CPU-seconds)",
        "<dd>cpu</dd>",
        "<dd>3 epochs</dd>",
        "stn_step=2",
        "0123456789",
        "python 3.11.7 · torch 2.14.1",
        "x86_64, 2 CPUs, Linux-test",
        "start 1.00 / 0.50 / 0.25; end 2.00 / 1.50 / 1.25",
        "55.0 (mean of 3)",
    ):
        assert text in new, text
    assert "10ep (10 epoch-equivalents)" in old
    for field in ("clock", "trial length", "commit", "load average", "CPU seconds"):
        assert re.search(rf"<dt>{field}</dt><dd>not recorded", old), field


def test_the_report_renders_in_a_headless_browser(report, tmp_path):
    if browser.chromium() is None:
        if os.environ.get("HPOBENCH_REQUIRE_BROWSER"):
            pytest.fail("chromium is not installed: apt-get install chromium")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    seen = browser.check(report[0])
    images = seen["images"]
    assert len(images) == report[0].read_text().count("<img ")
    for image in images:
        assert image["natural"] > 100 and image["visible"] and image["height"] > 50, image
    assert len(seen["tables"]) == report[0].read_text().count("<table>") >= 3 and all(
        t["rows"] > 0 and t["height"] > 0 for t in seen["tables"]
    )
    shot = browser.screenshot(report[0], tmp_path / "first-screen.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
