"""`python -m bench`: run the registered benchmarks and write docs/benchmarks.md."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from bench import suite
from bench.infra import require_infrastructure
from bench.machine import REPO, busy_note, describe
from bench.registry import BENCHMARKS, Context, plan
from bench.report import Outcome, render

DEFAULT_OUTPUT = REPO / "docs" / "benchmarks.md"

log = logging.getLogger("bench")


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="run this benchmark (repeatable); the baselines it is compared with run too",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of the harness")
    parser.add_argument(
        "--profile", action="store_true", help="run the service processes under cProfile and report hot spots"
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="where to write the report (default: docs/benchmarks.md for a full run; "
        "--quick, --only and --profile print it instead)",
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    return parser.parse_args(argv)


def _terminate_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every `finally` stops its processes and drops its databases."""

    def handle(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handle)


def _load_now() -> str:
    try:
        return " / ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    log.setLevel(logging.INFO)
    assert suite.MODULES  # the import registered the benchmarks
    if args.list:
        for definition in BENCHMARKS.values():
            needs = f" (needs {', '.join(definition.needs)})" if definition.needs else ""
            print(f"{definition.name}\t{definition.title}{needs}")
        return 0
    try:
        chosen = plan(args.only)
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return 2
    output = args.output
    if output is None and not (args.quick or args.only or args.profile):
        output = DEFAULT_OUTPUT

    _terminate_on_sigterm()
    require_infrastructure()
    machine = describe()
    busy = busy_note()
    workdir = REPO / "var" / "bench" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    ctx = Context(quick=args.quick, profile=args.profile, workdir=workdir)
    outcomes: list[Outcome] = []
    for definition in chosen:
        outcome = Outcome(definition)
        outcomes.append(outcome)
        missing = [name for name in definition.needs if name not in ctx.results]
        if missing:
            outcome.error = f"skipped: {', '.join(missing)} did not produce results"
            log.error("%s %s", definition.name, outcome.error)
            continue
        log.info("running %s%s", definition.name, " (quick)" if args.quick else "")
        started = time.perf_counter()
        try:
            result = definition.run(ctx)
        except KeyboardInterrupt:
            log.error("interrupted during %s; everything it started has been stopped", definition.name)
            return 130
        except Exception:
            outcome.error = traceback.format_exc(limit=8)
            log.error("%s failed:\n%s", definition.name, outcome.error)
            continue
        finally:
            outcome.seconds = time.perf_counter() - started
        outcome.result = result
        ctx.results[definition.name] = result
        for ratio in definition.ratios:
            baseline = ctx.results[ratio.baseline].figures.get(ratio.baseline_figure)
            figure = result.figures.get(ratio.figure)
            if baseline and figure and baseline.value:
                outcome.ratios.append((ratio.label, figure.value / baseline.value))
        for figure in result.figures.values():
            log.info("  %-55s %12.1f %s %s", figure.label, figure.value, figure.unit, figure.note)

    machine["load average"] += f"; {_load_now()} at the end"
    report = render(outcomes, machine, quick=args.quick, profile=args.profile, warning=busy)
    if output is None:
        print(report)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(report)
        log.info("wrote %s", output.relative_to(REPO) if output.is_relative_to(REPO) else output)
    log.info("logs under %s", workdir.relative_to(REPO))
    return 1 if any(outcome.error for outcome in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
