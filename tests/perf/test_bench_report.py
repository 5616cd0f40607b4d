"""benchmarks/report.py: the dj-stripe peer column beside the package's ratios.

The fixtures are trimmed results of ``benchmarks/ingest.py`` and
``benchmarks/djstripe_ingest.py`` (one round each); the report is run as a
reader runs it, ``python benchmarks/report.py ingest RUN.json PEER.json``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
