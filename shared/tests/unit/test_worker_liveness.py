"""A background loop that dies of an uncaught error makes the process unready instead of idle."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from retention_shared.runner import Workers


def _workers() -> Workers:
    platform: Any = None  # the liveness check needs no platform
    return Workers(platform=platform, runtimes=[])


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the point
def test_a_loop_that_died_is_reported_by_name() -> None:
    workers = _workers()

    def crash() -> None:
        raise RuntimeError("bug")

    workers._spawn("segmentation-worker-consumer", crash)
    for loop in workers._loops:
        loop.thread.join(5)
    with pytest.raises(RuntimeError, match="segmentation-worker-consumer"):
        workers.check_alive()


def test_running_loops_and_a_requested_stop_are_healthy() -> None:
    workers = _workers()
    release = threading.Event()
    workers._spawn("relay", release.wait)
    workers.check_alive()
    workers._stopping.set()
    release.set()
    for loop in workers._loops:
        loop.thread.join(5)
    workers.check_alive()
