"""Writing the results as docs/benchmarks.md."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.registry import Benchmark, Figure, Result, Table

HEADER = """\
# Benchmarks

These are the figures of the **last run** of the benchmark harness, overwritten by every full
run; they are measurements of one machine at one moment, not guarantees. Benchmarks are not
tests: nothing in the pytest suite is timed.

Run them with:

```
make bench                                   # every benchmark; writes this file (a few minutes)
.venv/bin/python -m bench --list             # the registered benchmarks
.venv/bin/python -m bench --only NAME        # one benchmark (and the baseline it is compared with)
.venv/bin/python -m bench --quick            # a short smoke run with small sizes
.venv/bin/python -m bench --profile --only platform_e2e   # services under cProfile
```

`--quick`, `--only` and `--profile` print the report instead of overwriting this file, unless
`--output docs/benchmarks.md` is given. Each run needs the local PostgreSQL and Kafka
(`make infra`); it creates its own databases and topics and removes them at the end. Service
logs and profiles go under `var/bench/`.
"""


@dataclass
class Outcome:
    benchmark: Benchmark
    result: Result | None = None
    error: str | None = None
    seconds: float = 0.0
    ratios: list[tuple[str, float]] = field(default_factory=list)


def format_value(figure: Figure) -> str:
    value, unit = figure.value, figure.unit
    if unit in ("events/s", "records/s"):
        text = f"{value:,.0f}"
    elif unit == "ms" or unit == "s":
        text = f"{value:,.1f}" if value >= 10 else f"{value:,.2f}"
    else:
        text = f"{value:,.1f}"
    return f"{text} {unit}"


def _table(columns: list[str], rows: list[list[str]]) -> list[str]:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return lines


def _extra(table: Table) -> list[str]:
    columns = [column for column in table.columns if column] or table.columns
    width = len(columns)
    return [f"**{table.title}**", "", *_table(columns, [row[:width] for row in table.rows]), ""]


def target_status(benchmark: Benchmark, result: Result) -> list[tuple[str, Figure | None, bool]]:
    checks = []
    for target in benchmark.targets:
        figure = result.figures.get(target.figure)
        checks.append((target.description, figure, figure is not None and target.met_by(figure.value)))
    return checks


def render(
    outcomes: list[Outcome],
    machine: dict[str, str],
    *,
    quick: bool,
    profile: bool,
    warning: str | None = None,
) -> str:
    lines = [HEADER]
    mode = []
    if quick:
        mode.append("**--quick** (small sizes: a smoke run, not representative)")
    if profile:
        mode.append("**--profile** (services under cProfile: slower than normal)")
    if mode:
        lines += ["> This run: " + "; ".join(mode), ""]

    lines += ["## Summary", ""]
    summary = []
    for outcome in outcomes:
        if outcome.result is None:
            summary.append([outcome.benchmark.title, "", "FAILED", ""])
            continue
        checks = target_status(outcome.benchmark, outcome.result)
        if not checks:
            figures = outcome.result.figures
            headline = figures.get(outcome.benchmark.headline or "") or next(iter(figures.values()), None)
            shown = f"{headline.label}: {format_value(headline)}" if headline else ""
            summary.append([outcome.benchmark.title, "(baseline, no target)", shown, ""])
        for description, figure, met in checks:
            summary.append(
                [
                    outcome.benchmark.title,
                    description,
                    format_value(figure) if figure else "not measured",
                    "**met**" if met else "**NOT met**",
                ]
            )
    lines += _table(["benchmark", "target", "measured", "met?"], summary) + [""]

    lines += ["## Machine", ""]
    lines += _table(["", ""], [[key, value] for key, value in machine.items()]) + [""]
    lines += [
        "Every process of a run (the services, PostgreSQL, Kafka and the load-generating client)",
        "shares these cores, and so does anything else running on the machine (see the load",
        "average): compare the ratios measured within one run rather than absolute figures across runs.",
        "",
    ]
    if warning:
        lines += [f"**{warning}**", ""]

    for outcome in outcomes:
        definition = outcome.benchmark
        lines += [f"## {definition.title}", "", f"`{definition.name}` — {definition.description}", ""]
        if outcome.result is None:
            lines += ["**Failed:**", "", "```", (outcome.error or "").strip(), "```", ""]
            continue
        result = outcome.result
        if result.parameters:
            lines += [
                "Parameters: "
                + "; ".join(f"{key}: {value}" for key, value in result.parameters.items())
                + ".",
                "",
            ]
        rows = [[figure.label, format_value(figure), figure.note] for figure in result.figures.values()]
        if any(figure.note for figure in result.figures.values()):
            lines += _table(["figure", "value", "note"], rows)
        else:
            lines += _table(["figure", "value"], [row[:2] for row in rows])
        lines += [""]
        if outcome.ratios:
            lines += _table(
                ["ratio (same run)", "value"], [[label, f"{value:.2f}×"] for label, value in outcome.ratios]
            ) + [""]
        for description, figure, met in target_status(definition, result):
            measured = format_value(figure) if figure else "not measured"
            verdict = "**met**" if met else "**NOT met**"
            lines += [f"Target {description}: {verdict} (measured {measured}).", ""]
        for note in result.notes:
            lines += [f"- {note}"]
        if result.notes:
            lines += [""]
        for table in result.tables:
            lines += _extra(table)
        lines += [f"_Took {outcome.seconds:.0f} s._", ""]
    return "\n".join(lines).rstrip() + "\n"
