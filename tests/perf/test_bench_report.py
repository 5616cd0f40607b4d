"""benchmarks/report.py: the dj-stripe peer column beside the package's ratios.

The fixtures are trimmed results of ``benchmarks/ingest.py`` and
``benchmarks/djstripe_ingest.py`` (one round each); the report is run as a
reader runs it, ``python benchmarks/report.py ingest RUN.json PEER.json``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
PACKAGE_RUN = FIXTURES / "ingest-run.json"
PEER_RUN = FIXTURES / "djstripe-run.json"


def report(*paths: Path) -> str:
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "report.py"), "ingest", *map(str, paths)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return completed.stdout


def table_rows(text: str, title: str) -> dict[str, list[str]]:
    """The rows of the Markdown table under ``### title``, by their first cell."""
    section = text.split(f"### {title}", 1)[1].split("### ", 1)[0]
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("|") and not line.startswith("| ---")
    ]
    return {r[0]: r for r in rows}


def test_peer_columns_stand_beside_the_package_ratio_phase_by_phase() -> None:
    text = report(PACKAGE_RUN, PEER_RUN)
    ratios = table_rows(text, "Package / floor")
    assert ratios["Phase"] == [
        "Phase",
        "package / floor",
        "SQL statements (package / floor)",
        "dj-stripe 2.11.0 / floor",
        "dj-stripe 2.11.0 / floor, its Stripe fetches left out",
        "SQL statements (dj-stripe 2.11.0)",
        "Stripe fetches (dj-stripe 2.11.0)",
    ]
    assert ratios["`payment_intent.succeeded`"] == [
        "`payment_intent.succeeded`",
        "8.46 (8.46-8.46)",
        "4 / 1",
        "13.94 (13.94-13.94)",
        "12.86",
        "23",
        "1.0",
    ]
    assert ratios["`account.updated`"][3:] == ["17.58 (17.58-17.58)", "15.81", "28", "2.0"]
    assert ratios["`duplicate`"][3:] == ["11.99 (11.99-11.99)", "11.99", "5", "0.0"]
    # A phase the peer has no counterpart of shows a dash, not another phase's figure.
    assert ratios["`payment_intent.succeeded (task mode)`"][3:] == ["—"] * 4

    absolute = table_rows(text, "Absolute figures")
    assert absolute["`payment_intent.succeeded`"][5:] == ["12.1", "80.5/114.3", "168.7"]

    conditions = table_rows(text, "Conditions")
    assert conditions["dj-stripe 2.11.0 1"][1] == "2026-12-04 16:45 UTC"


def test_without_a_peer_file_the_report_has_no_peer_column() -> None:
    text = report(PACKAGE_RUN)
    header = table_rows(text, "Package / floor")["Phase"]
    assert header == ["Phase", "package / floor", "SQL statements (package / floor)"]
    assert "dj-stripe" not in text


def test_the_dj_stripe_stub_answers_from_the_replayed_events_and_counts_misses() -> None:
    """benchmarks/djstripe_stub.py: what dj-stripe retrieves comes from the payloads."""
    import json
    import threading
    import urllib.error
    import urllib.request

    from benchmarks.djstripe_stub import StubServer, index_objects
    from tests.webhooks import stripe_objects as so

    charge = so.charge(payment_intent="pi_replayed")
    events = [
        so.event("payment_intent.succeeded", so.payment_intent(id="pi_replayed")),
        so.event("charge.succeeded", charge),
        so.event("account.updated", so.account("acct_replayed"), account="acct_replayed"),
    ]
    payloads = {
        "rounds": [
            {"phases": {e["type"]: [{"endpoint": "platform", "body": json.dumps(e)}]}}
            for e in events
        ]
    }
    server = StubServer(index_objects(payloads))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def get(path: str) -> dict:
        with urllib.request.urlopen(base + path) as response:
            return json.load(response)

    try:
        assert get("/v1/payment_intents/pi_replayed")["id"] == "pi_replayed"
        assert get(f"/v1/charges/{charge['id']}") == charge
        assert get("/v1/accounts/acct_replayed?expand[]=x")["id"] == "acct_replayed"
        assert get(f"/v1/events/{events[0]['id']}") == events[0]
        # Derived from the charge that names them (the events carry only their ids).
        txn = get(f"/v1/balance_transactions/{charge['balance_transaction']}")
        assert (txn["source"], txn["amount"]) == (charge["id"], charge["amount"])
        assert get(f"/v1/payment_methods/{charge['payment_method']}")["card"]["last4"] == "4242"
        assert get("/v1/account")["id"] == "acct_bench_platform"
        with pytest.raises(urllib.error.HTTPError) as missing:
            get("/v1/customers/cus_unknown")
        assert missing.value.code == 404
        assert json.load(missing.value)["error"]["code"] == "resource_missing"
        stats = get("/__stats")
        assert stats["misses"] == ["GET /v1/customers/cus_unknown"]
        assert stats["served"]["GET /v1/charges/<id>"] == 1
        assert stats["served"]["GET /v1/account"] == 1
    finally:
        server.shutdown()
        server.server_close()


def test_time_inside_the_driver_and_outside_it_is_a_table_of_its_own(tmp_path: Path) -> None:
    import json

    run = json.loads(PACKAGE_RUN.read_text())
    assert "Inside the database driver" not in report(PACKAGE_RUN)  # older results: no table
    for figures in run["phases"].values():
        figures.update(
            package_db_ms_median=2.5,
            package_python_ms_median=1.75,
            floor_db_ms_median=0.5,
            floor_python_ms_median=0.625,
        )
    with_split = tmp_path / "ingest-run.json"
    with_split.write_text(json.dumps(run))
    rows = table_rows(report(with_split), "Inside the database driver")
    assert rows["Phase"][1:] == [
        "package: in `execute`",
        "package: outside",
        "floor: in `execute`",
        "floor: outside",
    ]
    assert rows["`duplicate`"][1:] == ["2.50", "1.75", "0.50", "0.62"]
