"""benchmarks/statements.py: where a webhook statement's time goes, and its table.

The diagnosis runs each statement twice more before the real call, inside
transactions it rolls back: what these tests hold it to is that the delivery
still ends as it would have (one event row, the payment held once), that
each statement is measured under the right name, and that the table reads
the JSON the way docs/performance.md prints it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction

from tests.webhooks import stripe_objects as so
from tests.webhooks.conftest import events, intent_for, status_history

ROOT = Path(__file__).resolve().parents[2]

on_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the diagnosis explains PostgreSQL statements"
)


def diagnosis() -> Any:
    from benchmarks.statements import Diagnosis

    return Diagnosis()


def a_hold(make_payment: Any) -> tuple[Any, dict[str, Any]]:
    """A payment awaiting payment, and the event that holds it."""
    scene = make_payment()
    return scene, so.event("payment_intent.succeeded", intent_for(scene, "succeeded"))


@on_postgresql
def test_a_diagnosed_hold_still_holds_once_and_each_statement_is_measured(
    transactional_db: Any, deliver: Any, make_payment: Any, sim_stripe: Any
) -> None:
    scene, evt = a_hold(make_payment)
    measured = diagnosis()
    with connection.execute_wrapper(measured):
        assert deliver.platform(evt).json()["status"] == "processed"
    # The rolled-back runs left nothing: one row, processed once.
    assert events().filter(stripe_event_id=evt["id"]).count() == 1
    assert events().get(stripe_event_id=evt["id"]).attempts == 1
    assert status_history(scene) == ("held", "payment_in_escrow")

    figures = measured.medians()
    assert set(figures) == {"package: recorded-state read", "package: one statement"}
    read, statement = figures["package: recorded-state read"], figures["package: one statement"]
    assert read["n"] == statement["n"] == 1
    assert read["wal_bytes"] == 0
    # The hold writes the event, the payment and its task.
    assert statement["wal_bytes"] > 0
    assert statement["parameters"] > read["parameters"] == 1
    for name in ("quoting_ms", "server_ms", "plan_ms", "execution_ms", "autocommit_ms"):
        assert statement[name] > 0, name


@on_postgresql
def test_a_duplicate_is_measured_as_its_read_alone(
    transactional_db: Any, deliver: Any, make_payment: Any, sim_stripe: Any
) -> None:
    _scene, evt = a_hold(make_payment)
    deliver.platform(evt)
    measured = diagnosis()
    with connection.execute_wrapper(measured):
        assert deliver.platform(evt).json()["status"] == "duplicate"
    assert list(measured.medians()) == ["package: recorded-state read"]


@on_postgresql
def test_inside_a_transaction_the_diagnosis_refuses_to_run(
    transactional_db: Any, make_payment: Any
) -> None:
    scene = make_payment()
    with (
        pytest.raises(RuntimeError, match="only in autocommit"),
        transaction.atomic(),
        connection.execute_wrapper(diagnosis()),
    ):
        events().filter(object_id=scene.payment.stripe_payment_intent_id).exists()


def measures(**overrides: float) -> dict[str, float]:
    base = {
        "n": 200,
        "quoting_ms": 0.2,
        "server_ms": 1.0,
        "plan_ms": 0.45,
        "execution_ms": 0.42,
        "round_trip_ms": 0.08,
        "autocommit_ms": 1.9,
        "commit_ms": 0.7,
        "parse_and_transfer_ms": 0.05,
        "wal_bytes": 3900,
        "sql_chars": 3368,
        "parameters": 38,
    }
    return base | overrides


def test_the_table_prints_each_run_side_by_side_and_no_commit_for_a_read(
    tmp_path: Path,
) -> None:
    runs = []
    for number, plan in ((1, 0.45), (2, 0.47)):
        path = tmp_path / f"statements-run{number}.json"
        path.write_text(
            json.dumps(
                {
                    "phases": {
                        "payment_intent.succeeded": {
                            "package: one statement": measures(plan_ms=plan),
                            "package: recorded-state read": measures(
                                wal_bytes=0, commit_ms=-0.05, sql_chars=104, parameters=1
                            ),
                        }
                    }
                }
            )
        )
        runs.append(str(path))
    text = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "report.py"), "statements", *runs],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    rows = {
        cells[1]: cells
        for line in text.splitlines()
        if line.startswith("| `")
        for cells in [[c.strip() for c in line.strip().strip("|").split("|")]]
    }
    assert rows["package: one statement"] == [
        "`payment_intent.succeeded`",
        "package: one statement",
        "0.20 ; 0.20",
        "0.08 ; 0.08",
        "0.05 ; 0.05",
        "0.45 ; 0.47",
        "0.42 ; 0.42",
        "0.70 ; 0.70",
        "1.90 ; 1.90",
        "3.9 ; 3.9",
        "3368 / 38",
    ]
    # A read writes nothing: its residual is noise, not a commit.
    assert rows["package: recorded-state read"][7] == "—"
