"""Measuring helpers shared by the ingest benchmark and its dj-stripe peer.

Standard library only: :mod:`benchmarks.djstripe_ingest` imports this module
in dj-stripe's own venv, where neither the package nor its test host is
installed. Both runs thus time, summarise and aggregate the same way, which
is what makes their ratios comparable.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from collections.abc import Iterable
from typing import Any

#: The PostgreSQL settings a run records beside its figures.
PG_SETTINGS = (
    "server_version",
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_sync_method",
    "shared_buffers",
    "max_connections",
)


class Side:
    """Request times and SQL statements of one side (package, peer or floor) in one phase."""

    def __init__(self) -> None:
        self.ms: list[float] = []
        self.statements: list[int] = []
        #: Time in stripe-python's HTTP client per request (the peer's Stripe fetches).
        self.fetch_ms: list[float] = []
        #: Time inside the database driver's ``execute`` per request (the
        #: round trips, the server's work and the commit): what is left of a
        #: request without it is Python on the client's side.
        self.db_ms: list[float] = []

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.ms)

        def pct(p: float) -> float:
            return round(ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))], 3)

        mean = statistics.fmean(ordered)
        out = {
            "n": len(ordered),
            "mean_ms": round(mean, 3),
            "p50_ms": pct(0.5),
            "p95_ms": pct(0.95),
            "events_per_second": round(1000 / mean, 1),
            "statements": sorted(set(self.statements)),
            "statements_mean": round(statistics.fmean(self.statements), 2),
        }
        if self.fetch_ms:
            out["fetch_ms_mean"] = round(statistics.fmean(self.fetch_ms), 3)
        if self.db_ms:
            out["db_ms_mean"] = round(statistics.fmean(self.db_ms), 3)
            out["python_ms_mean"] = round(mean - out["db_ms_mean"], 3)
        return out


def ratio_spread(ratios: list[float]) -> dict[str, float]:
    """A phase's figure: the median ratio over the rounds, and their min-max."""
    return {
        "ratio_median": round(statistics.median(ratios), 2),
        "ratio_min": round(min(ratios), 2),
        "ratio_max": round(max(ratios), 2),
    }


def side_medians(name: str, summaries: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """One side's absolute figures over the rounds (medians), keys prefixed with ``name``."""
    rounds = list(summaries)
    return {
        f"{name}_events_per_second_median": statistics.median(
            s["events_per_second"] for s in rounds
        ),
        f"{name}_p50_ms_median": statistics.median(s["p50_ms"] for s in rounds),
        f"{name}_p95_ms_median": statistics.median(s["p95_ms"] for s in rounds),
        f"{name}_statements": sorted({n for s in rounds for n in s["statements"]}),
        **(
            {
                f"{name}_db_ms_median": statistics.median(s["db_ms_mean"] for s in rounds),
                f"{name}_python_ms_median": statistics.median(s["python_ms_mean"] for s in rounds),
            }
            if all("db_ms_mean" in s for s in rounds)
            else {}
        ),
    }


def pg_settings(connection: Any) -> dict[str, str]:
    values = {}
    with connection.cursor() as cursor:
        for name in PG_SETTINGS:
            cursor.execute(f"SHOW {name}")
            values[name] = cursor.fetchone()[0]
    return values


def emit(result: dict[str, Any], output: str | None) -> None:
    """A run's JSON on stdout, and in ``output`` too when given."""
    text = json.dumps(result, indent=1, default=str)
    if output:
        with open(output, "w") as fh:
            fh.write(text + "\n")
    sys.stdout.write(text + "\n")


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]
