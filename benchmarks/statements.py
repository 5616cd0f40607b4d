"""Where a webhook statement's time goes: quoting, parsing, planning, running, committing.

A diagnostic beside :mod:`benchmarks.ingest`, not a second ratio: it sends
the same phases' payloads to the package and to the floor, and for every SQL
statement either side runs it first measures, on the same connection and
before the real call,

- ``quoting_ms``: psycopg's client-side binding of the parameters into the
  SQL text (``ClientCursor.mogrify``), which is what Django's default
  PostgreSQL settings send;
- ``server_ms``: that text sent and answered inside ``BEGIN`` ...
  ``ROLLBACK`` (the round trip, the server's parse, analysis, planning and
  execution, the rows back; no commit);
- ``plan_ms``, ``execution_ms`` and ``wal_bytes``: ``EXPLAIN (ANALYZE,
  WAL)`` of the statement, also rolled back;
- ``round_trip_ms``: ``SELECT 1`` in the same kind of transaction;

then times the real call (``autocommit_ms``: quoting, server, commit and its
fsync). Derived per statement: ``commit_ms`` = autocommit - quoting - server,
and ``parse_and_transfer_ms`` = server - plan - execution - round trip (what
the server and the wire spend on the statement's text and its result row
beyond planning and running it).

The rolled-back runs warm the buffers the real call then finds, take and
release the same row locks, and add aborted WAL: the request times of this
run are not the benchmark's, so none are reported. Run through
``bash scripts/bench.sh statements`` (durable PostgreSQL, as the ingest) or,
against a PostgreSQL server you may create databases on::

    PYTHONPATH=. DJANGO_SETTINGS_MODULE=benchmarks.settings \\
        .venv/bin/python benchmarks/statements.py [--events 200]

It needs Django's default client-side binding (it explains what that sends).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from django.db import connection
from django.test.utils import setup_test_environment

from benchmarks import ingest  # sets up Django
from benchmarks.ingest import (
    PHASES,
    bench_database,
    clear_task_backend,
    log,
    machine,
    phase_settings,
    round_payloads,
    run_phase,
    warmed_up,
)
from benchmarks.measure import emit, loadavg, pg_settings

#: What is measured per statement (ms but for the two counts).
MEASURES = (
    "quoting_ms",
    "server_ms",
    "plan_ms",
    "execution_ms",
    "round_trip_ms",
    "autocommit_ms",
    "commit_ms",
    "parse_and_transfer_ms",
    "wal_bytes",
    "sql_chars",
    "parameters",
)


def kind_of(sql: str) -> str:
    """The statement's part in a delivery, by side and shape."""
    if ingest.floor.TABLE in sql:
        return "floor: insert"
    if sql.startswith("WITH"):
        return "package: one statement"
    if sql.startswith("SELECT"):
        return "package: recorded-state read"
    return "package: other"


def send(cursor: Any, sql: str) -> None:
    """Run finished SQL text (no parameters, not prepared) and read its rows, if any."""
    from psycopg.pq import ExecStatus

    cursor.execute(sql, prepare=False)
    # Not ``cursor.description``: building its column objects costs more
    # than reading a row, and the real call never asks for it.
    if cursor.pgresult is not None and cursor.pgresult.status == ExecStatus.TUPLES_OK:
        cursor.fetchall()


def rolled_back(raw: Any, run: Callable[[Any], Any]) -> float:
    """Seconds ``run(cursor)`` takes in a transaction that is then rolled back."""
    with raw.cursor() as cursor:
        cursor.execute("BEGIN")
        try:
            started = time.perf_counter()
            run(cursor)
            return time.perf_counter() - started
        finally:
            cursor.execute("ROLLBACK")


class Diagnosis:
    """An execute wrapper that measures each statement before running it for real."""

    def __init__(self) -> None:
        self.samples: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, ctx: Any):
        import psycopg

        if ctx["connection"].in_atomic_block:
            # Its BEGIN ... ROLLBACK would end the caller's transaction.
            raise RuntimeError("the statement diagnosis runs only in autocommit")
        raw = ctx["connection"].connection
        if many or params is None:
            return execute(sql, params, many, ctx)
        sample = self.samples[kind_of(sql)]
        started = time.perf_counter()
        text = psycopg.ClientCursor(raw).mogrify(sql, params)
        quoting = time.perf_counter() - started
        plan: dict[str, Any] = {}

        def explain(cursor: Any) -> None:
            cursor.execute("EXPLAIN (ANALYZE, WAL, FORMAT JSON) " + text, prepare=False)
            plan.update(cursor.fetchone()[0][0])

        # EXPLAIN first: the timed run then finds the buffers and caches as
        # warm as the real call will.
        rolled_back(raw, explain)
        server = rolled_back(raw, lambda c: send(c, text))
        round_trip = rolled_back(raw, lambda c: send(c, "SELECT 1"))
        started = time.perf_counter()
        try:
            return execute(sql, params, many, ctx)
        finally:
            autocommit = time.perf_counter() - started
            figures = {
                "quoting_ms": quoting * 1000,
                "server_ms": server * 1000,
                "plan_ms": plan["Planning Time"],
                "execution_ms": plan["Execution Time"],
                "round_trip_ms": round_trip * 1000,
                "autocommit_ms": autocommit * 1000,
                "commit_ms": (autocommit - quoting - server) * 1000,
                "parse_and_transfer_ms": server * 1000
                - plan["Planning Time"]
                - plan["Execution Time"]
                - round_trip * 1000,
                "wal_bytes": plan["Plan"].get("WAL Bytes", 0),
                "sql_chars": len(sql),
                "parameters": len(params),
            }
            for name, value in figures.items():
                sample[name].append(value)

    def medians(self) -> dict[str, dict[str, Any]]:
        return {
            kind: {"n": len(values["quoting_ms"])}
            | {name: round(statistics.median(values[name]), 3) for name in MEASURES}
            for kind, values in sorted(self.samples.items())
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200, help="events per phase")
    parser.add_argument("--chunk", type=int, default=25, help="events per alternation")
    parser.add_argument("--output", help="write the JSON here as well")
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        sys.exit("benchmarks need PostgreSQL: set DATABASE_URL (bash scripts/bench.sh does)")
    if connection.settings_dict.get("OPTIONS", {}).get("server_side_binding"):
        sys.exit("statements.py explains client-side binding: run it without ESCROW_PG_PREPARED")

    setup_test_environment()
    result: dict[str, Any] = {
        "benchmark": "webhook statements: quoting, server, plan, execution, commit",
        "machine": machine(),
        "load_average_before": loadavg(),
        "events_per_phase": args.events,
    }
    with bench_database("bench_statements"):
        result["postgresql"] = pg_settings(connection)
        log(f"statements: PostgreSQL {result['postgresql']}")
        client, customer, doer, _warm = warmed_up(args.chunk)
        payloads = round_payloads(args.events, customer, doer)
        with connection.cursor() as cursor:
            cursor.execute("CHECKPOINT")
        result["phases"] = {}
        for phase in PHASES:
            diagnosis = Diagnosis()
            with phase_settings(phase), connection.execute_wrapper(diagnosis):
                run_phase(client, phase, payloads[phase], args.chunk, 0)
            clear_task_backend()
            result["phases"][phase] = diagnosis.medians()
            for kind, figures in result["phases"][phase].items():
                log(f"statements: {phase}: {kind}: {figures}")
        result["load_average_after"] = loadavg()
    emit(result, args.output)


if __name__ == "__main__":
    main()
