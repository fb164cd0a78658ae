"""Run a `retention` command with every thread under cProfile, and write the merged stats on exit.

    python -m bench.profiled OUT.prof run consumer segmentation-worker --port 9100

cProfile on its own sees only the main thread; the consumers and the relay run on worker threads.
"""

from __future__ import annotations

import cProfile
import pstats
import signal
import sys
import threading
from types import FrameType
from typing import Any


def main() -> None:
    out, args = sys.argv[1], sys.argv[2:]
    profilers: list[cProfile.Profile] = []
    guard = threading.Lock()

    def start_profiling(_frame: FrameType, _event: str, _arg: Any) -> None:
        # Called once in each new thread; enable() replaces this hook with the profiler's own.
        profiler = cProfile.Profile()
        with guard:
            profilers.append(profiler)
        profiler.enable()

    def exit_on_sigterm(signum: int, _frame: FrameType | None) -> None:
        # uvicorn shuts down gracefully on SIGTERM, then raises the signal again: exit normally,
        # so the stats below are written.
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, exit_on_sigterm)
    threading.setprofile(start_profiling)
    main_profiler = cProfile.Profile()
    profilers.append(main_profiler)
    sys.argv = ["retention", *args]
    from retention_shared.cli import app

    main_profiler.enable()
    try:
        app()
    except SystemExit:
        pass
    finally:
        main_profiler.disable()
        threading.setprofile(None)
        with guard:
            pstats.Stats(*profilers).dump_stats(out)


if __name__ == "__main__":
    main()
