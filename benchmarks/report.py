"""Render benchmarks/results/*.json as the Markdown tables of docs/performance.md.

python benchmarks/report.py benchmarks/results/latest.json > /tmp/tables.md
"""

from __future__ import annotations

import json
import sys
from typing import Any


def row(*cells: Any) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def calls(entry: dict[str, Any]) -> str:
    return ", ".join(entry["gateway_calls"]).replace("-", "none")


def queries(entry: dict[str, Any]) -> str:
    low, high = entry["queries_min"], entry["queries_max"]
    return str(low) if low == high else f"{low}-{high}"


def render(data: dict[str, Any]) -> str:
    out: list[str] = []
    env = data["environment"]
    out += ["### Machine and versions", ""]
    out += [row("CPU", "cores", "RAM", "Python", "Django", "DRF", "PostgreSQL", "psycopg")]
    out += [row(*["---"] * 8)]
    out += [
        row(
            env["cpu"],
            env["nproc"],
            f"{env['ram_gb']} GB",
            env["python"],
            env["django"],
            env["djangorestframework"],
            env["postgresql"],
            env["psycopg"],
        ),
        "",
    ]

    hooks = data["webhooks"]
    new, dup, view = hooks["new_events"], hooks["duplicates"], hooks["http_view_new_events"]
    out += ["### Webhook ingest", ""]
    out += [row("Deliveries", "events", "events/s", "p50 ms", "p95 ms", "SQL queries")]
    out += [row(*["---"] * 6)]
    out += [
        row(
            "new, `receive()`",
            new["events"],
            new["events_per_second"],
            new["p50_ms"],
            new["p95_ms"],
            "see below",
        ),
        row(
            "new, HTTP view (test client)",
            view["events"],
            view["events_per_second"],
            view["p50_ms"],
            view["p95_ms"],
            queries(view),
        ),
        row(
            "duplicate, `receive()`",
            dup["events"],
            dup["events_per_second"],
            dup["p50_ms"],
            dup["p95_ms"],
            queries(dup),
        ),
        "",
    ]
    out += [
        row(
            "New event (endpoint:type)",
            "n",
            "p50 ms",
            "p95 ms",
            "SQL queries",
            "gateway calls",
            "outcome",
        )
    ]
    out += [row(*["---"] * 7)]
    for label, entry in new["by_type"].items():
        out.append(
            row(
                f"`{label}`",
                entry["n"],
                entry["p50_ms"],
                entry["p95_ms"],
                queries(entry),
                calls(entry),
                ", ".join(hooks["outcomes"][label]),
            )
        )
    out.append("")

    mem = hooks.get("memory_new_events")
    if mem:
        out += ["### Memory per new webhook event (peak of Python allocations)", ""]
        out += [row("New event (endpoint:type)", "n", "p50 KiB", "max KiB")]
        out += [row(*["---"] * 4)]
        everything = mem["all"]
        out.append(row("all", everything["n"], everything["p50_kib"], everything["max_kib"]))
        for label, entry in mem["by_type"].items():
            out.append(row(f"`{label}`", entry["n"], entry["p50_kib"], entry["max_kib"]))
        out.append("")

    out += ["### API endpoints (a few payments in the table)", ""]
    out += [row("Endpoint", "n", "p50 ms", "p95 ms", "SQL queries", "gateway calls")]
    out += [row(*["---"] * 6)]
    for label, entry in data["api"].items():
        out.append(
            row(
                f"`{label}`",
                entry["n"],
                entry["p50_ms"],
                entry["p95_ms"],
                queries(entry),
                calls(entry),
            )
        )
    out.append("")

    out += ["### Stripe calls per use case", ""]
    out += [row("Use case", "Stripe calls", "which", "SQL queries", "p50 ms")]
    out += [row(*["---"] * 5)]
    for label, entry in data["stripe_calls"].items():
        out.append(
            row(label, entry["gateway_calls_max"], calls(entry), queries(entry), entry["p50_ms"])
        )
    out.append("")

    scaling = data["scaling"]["sizes"]
    sizes = list(scaling)
    out += ["### Lists and dashboards as the table grows", ""]
    out += [row("Endpoint", *[f"{int(s):,} rows: queries / p50 ms" for s in sizes])]
    out += [row(*["---"] * (len(sizes) + 1))]
    for label in scaling[sizes[0]]["endpoints"]:
        cells = []
        for size in sizes:
            entry = scaling[size]["endpoints"][label]
            cells.append(f"{queries(entry)} / {entry['p50_ms']}")
        out.append(row(f"`{label}`", *cells))
    out.append("")
    out.append(
        "Heavy users' own rows: "
        + "; ".join(
            f"{int(s):,}: customer {scaling[s]['heavy_customer_payments']:,}, "
            f"doer {scaling[s]['heavy_doer_payments']:,}"
            for s in sizes
        )
        + "."
    )
    out.append("")
    if "memory_peak_kib" in scaling[sizes[0]]:
        out += ["### Memory of lists and dashboards as the table grows (peak KiB)", ""]
        out += [row("Endpoint", *[f"{int(s):,} rows" for s in sizes])]
        out += [row(*["---"] * (len(sizes) + 1))]
        for label in scaling[sizes[0]]["memory_peak_kib"]:
            out.append(row(f"`{label}`", *[scaling[s]["memory_peak_kib"][label] for s in sizes]))
        out.append("")
    if "max_rss_mib" in env:
        out += [f"Process maximum resident set over the whole run: {env['max_rss_mib']} MiB.", ""]
    return "\n".join(out)


if __name__ == "__main__":
    with open(sys.argv[1]) as fh:
        sys.stdout.write(render(json.load(fh)))
