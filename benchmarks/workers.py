"""Worker throughput on the real task engines, and the webhook request's cost.

Runs the real-worker tests (``tests/workers/test_engines.py``: a shuffled
backlog with duplicates, drained by 1, 2 and 4 worker processes of
django-tasks-db's ``db_worker`` and of Celery with Redis) with a backlog of
the tests' backlogs (or ``--backlog`` deliveries each), collects what every
run measured, and writes one JSON document::

    export "$(bash scripts/pg.sh start)" "$(bash scripts/redis.sh start)"
    PYTHONPATH=. .venv/bin/python benchmarks/workers.py \\
        --output benchmarks/results/workers.json

Per run: ``events_per_second`` is the unique events settled divided by the
time from the first event a worker settled to the last (worker start-up is
left out); ``request_ms_sync`` and ``request_ms_task`` are the mean webhook
request in the same run in sync mode (verify, record and process) and in
task mode (verify, record and enqueue), through Django's test client.
The machine's load is recorded beside them: the figures are only
comparable between runs on the same, quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backlog",
        type=int,
        default=0,
        help="deliveries per run (default: the tests' own, 2,000 with 4 workers, 600 with 1 or 2)",
    )
    parser.add_argument("--output", type=Path, help="where to write the JSON (default: stdout)")
    parser.add_argument("-k", default="", help="pytest -k expression, e.g. 'db and 4'")
    args = parser.parse_args()
    for name in ("DATABASE_URL", "REDIS_URL"):
        if not os.environ.get(name):
            parser.error(f"{name} is not set (see the module docstring)")

    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as results:
        env = {
            **os.environ,
            "ESCROW_WORKER_BACKLOG": str(args.backlog or ""),
            "ESCROW_WORKER_RESULTS": results.name,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:logging"]
        command += ["tests/workers/test_engines.py"] + (["-k", args.k] if args.k else [])
        load_before = os.getloadavg()
        started = time.time()
        done = subprocess.run(command, cwd=ROOT, env=env, check=False)  # noqa: S603 - our own pytest
        runs = [json.loads(line) for line in Path(results.name).read_text().splitlines()]

    import django

    document = {
        "benchmark": "workers",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "backlog_deliveries": args.backlog or "the tests' defaults",
        "pytest_exit_code": done.returncode,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "django": django.get_version(),
            "platform": platform.platform(),
        },
        "runs": runs,
    }
    text = json.dumps(document, indent=2) + "\n"
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    for run in runs:
        sys.stderr.write(
            f"{run['engine']:>6} x{run['workers']}: {run['events_per_second']:7.1f} events/s; "
            f"request {run['request_ms_sync']:.1f} ms sync, {run['request_ms_task']:.1f} ms task\n"
        )
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
