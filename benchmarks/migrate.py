"""``migrate`` of a fresh database: the migrations' status field with and
without django-fsm-2's transition collector on historical models.

The package's migrations use ``HistoricalFSMField``
(``django_escrow_connect/migration_fields.py``), which disconnects the
``class_prepared`` receiver ``FSMField`` connects for every field it meets.
This runs ``migrate`` (the test host, ``tests.settings``: the package's
migrations and its test apps') on a new SQLite file in a fresh process per
round, alternately as shipped and with that field behaving as plain
``FSMField`` (``--rounds`` of each, which goes first alternating), and writes
one JSON document::

    PYTHONPATH=. .venv/bin/python benchmarks/migrate.py \\
        --output benchmarks/results/migrate-run1.json

The ratio plain / shipped is the figure (docs/performance.md); seconds vary
with the machine, and its load is recorded beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: One round, in its own process: ``migrate`` on ``sys.argv[2]``, timed.
ROUND = """
import os, sys, time
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
os.environ["DATABASE_URL"] = "sqlite:///" + sys.argv[2]
import django
if sys.argv[1] == "plain":
    # FSMField's own behaviour: the receiver stays connected.
    from django_fsm import FSMField
    from django_escrow_connect.migration_fields import HistoricalFSMField
    HistoricalFSMField.contribute_to_class = FSMField.contribute_to_class
django.setup()
from django.core.management import call_command
from django.db.models.signals import class_prepared
start = time.perf_counter()
call_command("migrate", verbosity=0)
print(time.perf_counter() - start, len(class_prepared.receivers))
"""

MODES = ("shipped", "plain")


def one_round(mode: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as directory:
        database = os.path.join(directory, "bench.sqlite3")
        out = subprocess.run(  # noqa: S603 - our own round, this interpreter
            [sys.executable, "-c", ROUND, mode, database],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
    return {"seconds": round(float(out[0]), 2), "receivers": int(out[1])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", help="JSON file to write (default: stdout only)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    rounds: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for number in range(args.rounds):
        order = MODES if number % 2 == 0 else MODES[::-1]
        for mode in order:
            rounds[mode].append(one_round(mode))
    median = {mode: statistics.median(r["seconds"] for r in rounds[mode]) for mode in MODES}
    result = {
        "benchmark": "migrate",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "rounds": rounds,
        "median_seconds": median,
        "ratio_plain_to_shipped": round(median["plain"] / median["shipped"], 2),
    }
    text = json.dumps(result, indent=2)
    sys.stdout.write(text + "\n")
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
