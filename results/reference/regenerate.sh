#!/bin/sh
# Regenerates every table and figure under results/reference from the committed run folders in
# results/reference/runs, and the HTML report of all of them (run from anywhere; PYTHON defaults to the project's
# .venv, else python). Event logs of complete runs are gzipped first (readers take either), so new runs can be
# swept straight into runs/. Figures are removed before they are made again, so none outlives its runs. With
# Debian's chromium installed it also takes the screenshot of the report's first screen (fonts make its bytes
# machine-dependent; no test compares them).
set -e
cd "$(dirname "$0")/../.."
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}
$PY -c "
from pathlib import Path
from hpobench_stn.store import EVENTS, archive_events, is_complete
for log in sorted(Path('results/reference/runs').rglob(EVENTS)):
    if is_complete(log.parent):
        archive_events(log.parent)
"
for task in quadratic ptb cifar; do
    [ -d "results/reference/runs/$task" ] || continue
    rm -f "results/reference/$task"/*.png "results/reference/$task"/*.pdf
    $PY -m hpobench_stn table --runs "results/reference/runs/$task" --format all --out "results/reference/$task"
    $PY -m hpobench_stn plot --runs "results/reference/runs/$task" --out "results/reference/$task"
done
$PY -m hpobench_stn table --runs results/reference/runs --format paper --out results/reference
$PY -m hpobench_stn report --runs results/reference/runs --out results/reference
if command -v chromium >/dev/null 2>&1; then
    $PY -m analysis.browser screenshot results/reference/report.html results/reference/report-first-screen.png
fi
