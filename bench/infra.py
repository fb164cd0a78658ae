"""Infrastructure for benchmarks: fresh databases and topics, and service processes that always stop."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from kafka import KafkaAdminClient

from retention_shared.messaging.kafka import ensure_topics
from retention_shared.testing import infra as test_infra
from retention_shared.testing.processes import die_with_parent
from retention_shared.testing.smtp import free_port

log = logging.getLogger("bench")

PG_ADMIN_URL = test_infra.ADMIN_URL  # RETENTION_TEST_PG_ADMIN_URL overrides it
KAFKA_BOOTSTRAP = test_infra.KAFKA_BOOTSTRAP  # RETENTION_TEST_KAFKA_BOOTSTRAP overrides it
PARTITIONS = 12


def require_infrastructure() -> None:
    if not test_infra.postgres_available():
        raise SystemExit(f"PostgreSQL is not reachable at {PG_ADMIN_URL} (start it with `make infra`)")
    if not test_infra.kafka_available():
        raise SystemExit(f"Kafka is not reachable at {KAFKA_BOOTSTRAP} (start it with `make infra`)")


@contextlib.contextmanager
def fresh_databases(count: int) -> Iterator[list[str]]:
    """`count` new, empty PostgreSQL databases, dropped again on the way out."""
    urls: list[str] = []
    try:
        for _ in range(count):
            urls.append(test_infra.create_database(prefix="retention_bench"))
        yield urls
    finally:
        for url in urls:
            try:
                test_infra.drop_database(url)
            except Exception:
                log.exception("could not drop %s", url.rsplit("/", 1)[1])


@contextlib.contextmanager
def fresh_topics(names: Sequence[str], partitions: int = PARTITIONS) -> Iterator[list[str]]:
    """Create the topics, and delete them on the way out."""
    try:
        ensure_topics(KAFKA_BOOTSTRAP, list(names), partitions=partitions, replication=1)
        yield list(names)
    finally:
        delete_topics(names)


def delete_topics(names: Sequence[str]) -> None:
    try:
        admin = KafkaAdminClient(bootstrap_servers=KAFKA_BOOTSTRAP, client_id="retention-bench")
    except Exception:
        log.exception("could not reach Kafka to delete the benchmark topics")
        return
    try:
        existing = set(admin.list_topics())
        doomed = [name for name in names if name in existing]
        if doomed:
            admin.delete_topics(doomed)
    except Exception:
        log.exception("could not delete topics %s", ", ".join(names))
    finally:
        admin.close()


@dataclass
class ServiceProcess:
    """One `retention` process (an API or a consumer) with /healthz on `port`."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    profile_to: Path | None = None
    popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.profile_to is None:
            command = [sys.executable, "-m", "retention_shared.cli"]
        else:
            command = [sys.executable, "-m", "bench.profiled", str(self.profile_to)]
        log_file = self.log_path.open("ab")
        try:
            self.popen = subprocess.Popen(
                [*command, *self.args, "--port", str(self.port)],
                env=self.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent if sys.platform == "linux" else None,
            )
        finally:
            log_file.close()

    def wait_healthy(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.popen is not None
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not healthy after {timeout_s:.0f}s:\n{self.tail()}")

    def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout_s`."""
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("%s ignored SIGTERM for %.0fs; killing it", self.name, timeout_s)
            self.popen.kill()
            self.popen.wait()

    def tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def running(processes: Sequence[ServiceProcess]) -> Iterator[None]:
    """Start the processes and wait until they are healthy; stop every one on the way out, even on error."""
    try:
        for process in processes:
            process.start()
        for process in processes:
            process.wait_healthy()
        yield
    finally:
        for process in reversed(processes):
            try:
                process.stop()
            except Exception:
                log.exception("could not stop %s", process.name)


def cli(args: Sequence[str], env: dict[str, str]) -> None:
    """Run a `retention` command (e.g. migrate) to completion; raise with its output if it fails."""
    done = subprocess.run(
        [sys.executable, "-m", "retention_shared.cli", *args], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"retention {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")


def platform_env(**settings: str) -> dict[str, str]:
    """The environment without any RETENTION_* from the caller's shell, plus `settings`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RETENTION_")}
    env.update(settings)
    return env
