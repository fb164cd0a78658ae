"""The benchmark registry: each benchmark is a function that returns named figures.

A later issue adds a benchmark by writing a module with a function decorated by `@benchmark(...)`
and importing that module in `bench.suite`. The runner resolves `needs` (so a ratio's baseline is
always measured in the same run), checks the declared targets and computes the declared ratios.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Figure:
    """One measured number, e.g. ("produce_rate", "produce", 41234.5, "events/s")."""

    name: str
    label: str
    value: float
    unit: str
    note: str = ""


@dataclass(frozen=True)
class Target:
    """A figure of this benchmark that must reach `minimum` (e.g. the issue's acceptance number), and,
    for a latency, stay at or under `maximum`."""

    figure: str
    minimum: float
    description: str
    maximum: float | None = None

    def met_by(self, value: float) -> bool:
        return value >= self.minimum and (self.maximum is None or value <= self.maximum)


@dataclass(frozen=True)
class Ratio:
    """`figure` of this benchmark divided by `baseline_figure` of `baseline` (measured in the same run)."""

    label: str
    figure: str
    baseline: str
    baseline_figure: str


@dataclass
class Table:
    """Extra detail a benchmark wants in the report (e.g. where the time went)."""

    title: str
    columns: list[str]
    rows: list[list[str]]


@dataclass
class Result:
    figures: dict[str, Figure] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    parameters: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, label: str, value: float, unit: str, note: str = "") -> Figure:
        figure = Figure(name, label, value, unit, note)
        self.figures[name] = figure
        return figure

    def value(self, name: str) -> float:
        return self.figures[name].value


@dataclass
class Context:
    """What a benchmark gets: the mode of the run, where to write its logs, earlier results."""

    quick: bool
    profile: bool
    workdir: Path
    results: dict[str, Result] = field(default_factory=dict)

    def log_dir(self, benchmark: str) -> Path:
        path = self.workdir / benchmark
        path.mkdir(parents=True, exist_ok=True)
        return path


BenchmarkFunction = Callable[[Context], Result]


@dataclass(frozen=True)
class Benchmark:
    name: str
    title: str
    description: str
    run: BenchmarkFunction
    needs: tuple[str, ...] = ()
    targets: tuple[Target, ...] = ()
    ratios: tuple[Ratio, ...] = ()
    headline: str | None = None  # the figure the summary shows when there is no target


BENCHMARKS: dict[str, Benchmark] = {}


def benchmark(
    name: str,
    *,
    title: str,
    needs: tuple[str, ...] = (),
    targets: tuple[Target, ...] = (),
    ratios: tuple[Ratio, ...] = (),
    headline: str | None = None,
) -> Callable[[BenchmarkFunction], BenchmarkFunction]:
    """Register a benchmark; its docstring becomes its description in the report."""

    def register(function: BenchmarkFunction) -> BenchmarkFunction:
        if name in BENCHMARKS:
            raise ValueError(f"benchmark {name!r} registered twice")
        description = " ".join((function.__doc__ or "").split())
        BENCHMARKS[name] = Benchmark(name, title, description, function, needs, targets, ratios, headline)
        return function

    return register


def plan(only: list[str] | None) -> list[Benchmark]:
    """The benchmarks to run, in registration order, each after everything it needs.

    Registration order alone is not enough: a module may import another benchmark module and so
    register it before its baseline."""
    unknown = [name for name in only or [] if name not in BENCHMARKS]
    if unknown:
        raise KeyError(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    ordered: list[Benchmark] = []

    def want(name: str) -> None:
        if any(definition.name == name for definition in ordered):
            return
        for dependency in BENCHMARKS[name].needs:
            want(dependency)
        ordered.append(BENCHMARKS[name])

    for name in only or list(BENCHMARKS):
        want(name)
    return ordered
