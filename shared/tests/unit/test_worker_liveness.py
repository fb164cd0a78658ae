"""A background loop that dies of an uncaught error makes the process unready instead of idle."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient

from retention_shared.runner import Workers
from retention_shared.web import ServiceApi, create_app


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


def test_healthz_fails_with_the_loop_named_and_readyz_is_unaffected() -> None:
    healthy = {"fine": True}

    def loops() -> None:
        if not healthy["fine"]:
            raise RuntimeError("background loops ended unexpectedly: x-consumer")

    app = create_app("probe", "probe", [ServiceApi("workers", [], liveness={"loops": loops})])
    client = TestClient(app)
    assert client.get("/healthz").json() == {"status": "ok", "checks": {"workers:loops": "ok"}}
    healthy["fine"] = False
    answer = client.get("/healthz")
    assert answer.status_code == 503
    assert "x-consumer" in answer.json()["checks"]["workers:loops"]
    assert client.get("/readyz").status_code == 200
