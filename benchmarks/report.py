"""Render benchmark results as the Markdown tables of docs/performance.md.

    python benchmarks/report.py ingest RUN1.json [RUN2.json ...]   # ratios, then absolutes
    python benchmarks/report.py api RUN1.json [RUN2.json ...]      # API at each table size

Given several runs, each cell shows the runs' values side by side
("a / b"), so a reader (and the docs) see at once what the runs agree on.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def row(*cells: Any) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def both(values: list[Any]) -> str:
    """One value per run, in run order."""
    return " ; ".join(str(v) for v in values)


def ms(value: float) -> str:
    return f"{value:.1f}"


def render_ingest(runs: list[dict[str, Any]]) -> str:
    out: list[str] = []
    first = runs[0]
    out += ["### Package / floor (median of rounds, min-max in brackets; run 1 ; run 2)", ""]
    out += [row("Phase", "package / floor", "SQL statements (package / floor)")]
    out += [row("---", "---", "---")]
    for phase, figures in first["phases"].items():
        cells = [
            f"{r['phases'][phase]['ratio_median']:.2f} "
            f"({r['phases'][phase]['ratio_min']:.2f}-{r['phases'][phase]['ratio_max']:.2f})"
            for r in runs
        ]
        statements = (
            f"{','.join(map(str, figures['package_statements']))} / "
            f"{','.join(map(str, figures['floor_statements']))}"
        )
        out.append(row(f"`{phase}`", both(cells), statements))
    out.append("")
    out += ["### Absolute figures (medians of rounds; run 1 ; run 2)", ""]
    out += [
        row("Phase", "package ev/s", "floor ev/s", "package p50 / p95 ms", "floor p50 / p95 ms")
    ]
    out += [row(*["---"] * 5)]
    for phase in first["phases"]:
        p = [r["phases"][phase] for r in runs]
        out.append(
            row(
                f"`{phase}`",
                both([x["package_events_per_second_median"] for x in p]),
                both([x["floor_events_per_second_median"] for x in p]),
                both(
                    [
                        f"{ms(x['package_p50_ms_median'])}/{ms(x['package_p95_ms_median'])}"
                        for x in p
                    ]
                ),
                both([f"{ms(x['floor_p50_ms_median'])}/{ms(x['floor_p95_ms_median'])}" for x in p]),
            )
        )
    out.append("")
    out += ["### Conditions", ""]
    out += [row("Run", "when", "load before", "load after", "CPUs", "PostgreSQL settings")]
    out += [row(*["---"] * 6)]
    for number, r in enumerate(runs, 1):
        pg = r["postgresql"]
        out.append(
            row(
                number,
                r["machine"]["when"],
                r["load_average_before"],
                r["load_average_after"],
                r["machine"]["cpu_count"],
                ", ".join(f"{k}={v}" for k, v in pg.items()),
            )
        )
    out.append("")
    return "\n".join(out)


def render_api(runs: list[dict[str, Any]]) -> str:
    out: list[str] = []
    sizes = list(runs[0]["scaling"]["sizes"])
    out += [
        "### API requests excluding Stripe, as the table grows "
        "(p50/p95 ms per run, run 1 ; run 2, then SQL queries)",
        "",
    ]
    out += [row("Request", *[f"{int(s):,} rows" for s in sizes])]
    out += [row(*["---"] * (len(sizes) + 1))]
    for label in runs[0]["scaling"]["sizes"][sizes[0]]["endpoints"]:
        cells = []
        for size in sizes:
            entries = [r["scaling"]["sizes"][size]["endpoints"][label] for r in runs]
            timing = both(
                [
                    f"{ms(e['p50_ms_excluding_stripe'])}/{ms(e['p95_ms_excluding_stripe'])}"
                    for e in entries
                ]
            )
            queries = sorted({q for e in entries for q in (e["queries_min"], e["queries_max"])})
            cells.append(f"{timing}, {'-'.join(map(str, queries))} q")
        out.append(row(f"`{label}`", *cells))
    out.append("")
    out += ["### Stripe calls per use case", ""]
    out += [row("Use case", "Stripe calls", "which")]
    out += [row(*["---"] * 3)]
    for label, entry in runs[0]["stripe_calls"].items():
        out.append(
            row(label, entry["gateway_calls_max"], ", ".join(entry["gateway_calls"]) or "none")
        )
    out.append("")
    out += ["### Conditions", ""]
    out += [row("Run", "when", "load start", "load end", "PostgreSQL settings")]
    out += [row(*["---"] * 5)]
    for number, r in enumerate(runs, 1):
        env = r["environment"]
        out.append(
            row(
                number,
                env["when"],
                env["load_average_at_start"],
                env.get("load_average_at_end"),
                ", ".join(f"{k}={v}" for k, v in env.get("postgresql_settings", {}).items()),
            )
        )
    out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    kind, *paths = sys.argv[1:]
    loaded = []
    for path in paths:
        with open(path) as fh:
            loaded.append(json.load(fh))
    sys.stdout.write((render_ingest if kind == "ingest" else render_api)(loaded))
