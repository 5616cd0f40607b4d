"""Render benchmark results as the Markdown tables of docs/performance.md.

    python benchmarks/report.py ingest RUN1.json [RUN2.json ...]   # ratios, then absolutes
    python benchmarks/report.py ingest RUN.json DJSTRIPE.json      # with dj-stripe's column
    python benchmarks/report.py api RUN1.json [RUN2.json ...]      # API at each table size
    python benchmarks/report.py statements RUN1.json [RUN2.json ...]  # per statement

Given several runs, each cell shows the runs' values side by side
("a / b"), so a reader (and the docs) see at once what the runs agree on.
Results of ``benchmarks/djstripe_ingest.py`` among the ingest files are the
peer: dj-stripe / floor (measured against the same floor, on the same
payloads) is printed beside the package's ratio, phase by phase.
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


def is_peer(result: dict[str, Any]) -> bool:
    """A dj-stripe result (benchmarks/djstripe_ingest.py) rather than the package's."""
    return "peer" in result


def ratio(figures: dict[str, Any]) -> str:
    return f"{figures['ratio_median']:.2f} ({figures['ratio_min']:.2f}-{figures['ratio_max']:.2f})"


def statements(values: list[int]) -> str:
    return ",".join(map(str, values))


def render_ingest(results: list[dict[str, Any]]) -> str:
    runs = [r for r in results if not is_peer(r)]
    peers = [r for r in results if is_peer(r)]
    name = peers[0]["peer"] if peers else ""
    out: list[str] = []
    first = runs[0]

    def peer_cells(phase: str, cell: Any) -> list[str]:
        """The peer's cells of ``phase`` (a dash where it has no such phase)."""
        if not peers:
            return []
        values = [cell(p["phases"][phase]) if phase in p["phases"] else "—" for p in peers]
        return [both(values)]

    out += [
        "### Package / floor "
        "(median of rounds, min-max in brackets; runs in order, separated by semicolons)",
        "",
    ]
    header = ["Phase", "package / floor", "SQL statements (package / floor)"]
    if peers:
        header += [
            f"{name} / floor",
            f"{name} / floor, its Stripe fetches left out",
            f"SQL statements ({name})",
            f"Stripe fetches ({name})",
        ]
    out += [row(*header), row(*["---"] * len(header))]
    for phase, figures in first["phases"].items():
        cells = [ratio(r["phases"][phase]) for r in runs]
        sql = (
            f"{statements(figures['package_statements'])} / "
            f"{statements(figures['floor_statements'])}"
        )
        out.append(
            row(
                f"`{phase}`",
                both(cells),
                sql,
                *peer_cells(phase, ratio),
                *peer_cells(phase, lambda f: f"{f['ratio_excluding_fetches_median']:.2f}"),
                *peer_cells(phase, lambda f: statements(f["djstripe_statements"])),
                *peer_cells(phase, lambda f: f["stripe_fetches_per_event"]),
            )
        )
    out.append("")
    out += ["### Absolute figures (medians of rounds; runs in order, separated by semicolons)", ""]
    header = ["Phase", "package ev/s", "floor ev/s", "package p50 / p95 ms", "floor p50 / p95 ms"]
    if peers:
        header += [f"{name} ev/s", f"{name} p50 / p95 ms", f"floor ev/s ({name} run)"]
    out += [row(*header), row(*["---"] * len(header))]
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
                *peer_cells(phase, lambda f: f["djstripe_events_per_second_median"]),
                *peer_cells(
                    phase,
                    lambda f: (
                        f"{ms(f['djstripe_p50_ms_median'])}/{ms(f['djstripe_p95_ms_median'])}"
                    ),
                ),
                *peer_cells(phase, lambda f: f["floor_events_per_second_median"]),
            )
        )
    out.append("")
    if all("package_db_ms_median" in r["phases"][phase] for r in runs for phase in r["phases"]):
        out += split_table(runs)
    out += ["### Conditions", ""]
    out += [row("Run", "when", "load before", "load after", "CPUs", "PostgreSQL settings")]
    out += [row(*["---"] * 6)]
    labelled = [(str(n), r) for n, r in enumerate(runs, 1)]
    labelled += [(f"{name} {n}", r) for n, r in enumerate(peers, 1)]
    for number, r in labelled:
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


def split_table(runs: list[dict[str, Any]]) -> list[str]:
    """Mean ms per request inside the driver's ``execute`` and outside it, per side."""
    out = [
        "### Inside the database driver and outside it "
        "(mean ms per request, medians of rounds; runs in order, separated by semicolons)",
        "",
    ]
    header = [
        "Phase",
        "package: in `execute`",
        "package: outside",
        "floor: in `execute`",
        "floor: outside",
    ]
    out += [row(*header), row(*["---"] * len(header))]
    for phase in runs[0]["phases"]:
        p = [r["phases"][phase] for r in runs]
        out.append(
            row(
                f"`{phase}`",
                *(
                    both([ms2(x[f"{side}_{part}_ms_median"]) for x in p])
                    for side in ("package", "floor")
                    for part in ("db", "python")
                ),
            )
        )
    out.append("")
    return out


def ms2(value: float) -> str:
    return f"{value:.2f}"


def render_api(runs: list[dict[str, Any]]) -> str:
    out: list[str] = []
    sizes = list(runs[0]["scaling"]["sizes"])
    out += [
        "### API requests excluding Stripe, as the table grows "
        "(p50/p95 ms per run, runs in order, separated by semicolons, then SQL queries)",
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


#: The columns of the statements table: (heading, the measure in benchmarks/statements.py).
STATEMENT_COLUMNS = (
    ("quoting", "quoting_ms"),
    ("round trip", "round_trip_ms"),
    ("parse and transfer", "parse_and_transfer_ms"),
    ("plan", "plan_ms"),
    ("execution", "execution_ms"),
    ("commit and driver", "commit_ms"),
    ("in all (autocommit)", "autocommit_ms"),
)


def render_statements(runs: list[dict[str, Any]]) -> str:
    """Per phase and statement, the medians of ``benchmarks/statements.py`` (ms, WAL kB)."""
    out = [
        "Medians per statement, ms (WAL in kB); runs in order, separated by semicolons.",
        "",
        row(
            "Phase",
            "statement",
            *(heading for heading, _ in STATEMENT_COLUMNS),
            "WAL kB",
            "SQL chars / parameters",
        ),
        row(*["---"] * (len(STATEMENT_COLUMNS) + 4)),
    ]
    for phase, kinds in runs[0]["phases"].items():
        for kind, first in kinds.items():
            figures = [r["phases"][phase][kind] for r in runs]
            writes = first["wal_bytes"] > 0
            cells = [
                both(f"{f[key]:.2f}" for f in figures) if writes or key != "commit_ms" else "—"
                for _, key in STATEMENT_COLUMNS
            ]
            out.append(
                row(
                    f"`{phase}`",
                    kind,
                    *cells,
                    both(f"{f['wal_bytes'] / 1000:.1f}" for f in figures),
                    f"{first['sql_chars']:.0f} / {first['parameters']:.0f}",
                )
            )
    out.append("")
    return "\n".join(out)


RENDERERS = {"ingest": render_ingest, "api": render_api, "statements": render_statements}


if __name__ == "__main__":
    kind, *paths = sys.argv[1:]
    loaded = []
    for path in paths:
        with open(path) as fh:
            loaded.append(json.load(fh))
    sys.stdout.write(RENDERERS[kind](loaded))
