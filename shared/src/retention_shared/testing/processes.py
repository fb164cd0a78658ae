"""Starting the platform as real processes for end-to-end tests, and stopping it again."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from retention_shared.testing.smtp import free_port

SERVICES = ("customer-api", "segmentation-worker", "followup-scheduler", "survey-service")
DATABASE_SETTINGS = {
    "customer-api": "RETENTION_CUSTOMER_API_DATABASE_URL",
    "segmentation-worker": "RETENTION_SEGMENTATION_DATABASE_URL",
    "followup-scheduler": "RETENTION_FOLLOWUP_DATABASE_URL",
    "survey-service": "RETENTION_SURVEY_DATABASE_URL",
}
ADMIN_TOKEN = "e2e-admin-token"


def die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the process that started it dies.

    A test run killed from outside (a timeout, Ctrl-C twice) skips its fixtures' teardown; without
    this its service processes would live on and keep consuming."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclass
class Process:
    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    port: int
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "retention_shared.cli", *self.args, "--port", str(self.port)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
        )

    def wait_healthy(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.popen is not None
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.name} not healthy in {timeout_s}s:\n{self.tail()}")

    def signal(self, signum: int) -> None:
        assert self.popen is not None
        self.popen.send_signal(signum)

    def stop(self, timeout_s: float = 30) -> int:
        if self.popen is None or self.popen.poll() is not None:
            return self.popen.returncode if self.popen else 0
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise AssertionError(f"{self.name} ignored SIGTERM for {timeout_s}s:\n{self.tail()}") from None

    def kill(self) -> None:
        assert self.popen is not None
        self.popen.kill()
        self.popen.wait()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Platform:
    """Where each service's API answers, plus the processes behind them."""

    urls: dict[str, str]
    processes: dict[str, Process] = field(default_factory=dict)
    databases: dict[str, str] = field(default_factory=dict)
    admin_token: str = ADMIN_TOKEN

    def url(self, service: str) -> str:
        return self.urls[service]

    def start(self) -> None:
        for process in self.processes.values():
            process.start()
        for process in self.processes.values():
            process.wait_healthy()

    def stop(self) -> dict[str, int]:
        return {name: process.stop() for name, process in self.processes.items()}


def base_env(tmp_path: Path, smtp_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETENTION_")}
    env.update(
        RETENTION_ADMIN_TOKEN=ADMIN_TOKEN,
        RETENTION_SMTP_HOST="127.0.0.1",
        RETENTION_SMTP_PORT=str(smtp_port),
        RETENTION_DATA_DIR=str(tmp_path / "var"),
        RETENTION_LOG_FORMAT="text",
    )
    return env


def distributed(
    tmp_path: Path, *, databases: dict[str, str], kafka: str, namespace: str, smtp_port: int
) -> Platform:
    env = base_env(tmp_path, smtp_port)
    env.update(
        RETENTION_MODE="distributed", RETENTION_KAFKA_BOOTSTRAP=kafka, RETENTION_TOPIC_NAMESPACE=namespace
    )
    for service, url in databases.items():
        env[DATABASE_SETTINGS[service]] = url
    subprocess.run(
        [sys.executable, "-m", "retention_shared.cli", "migrate", "all"],
        env=env,
        check=True,
        capture_output=True,
    )
    platform = Platform(urls={}, databases=dict(databases))
    for service in SERVICES:
        api = Process(
            f"{service}-api", ["run", "api", service], env, tmp_path / f"{service}-api.log", free_port()
        )
        worker = Process(
            f"{service}-consumer",
            ["run", "consumer", service],
            env,
            tmp_path / f"{service}-consumer.log",
            free_port(),
        )
        platform.processes[api.name] = api
        platform.processes[worker.name] = worker
        platform.urls[service] = f"http://127.0.0.1:{api.port}"
    return platform


def all_in_one(tmp_path: Path, *, smtp_port: int) -> Platform:
    env = base_env(tmp_path, smtp_port)
    env["RETENTION_MODE"] = "embedded"
    process = Process("all-in-one", ["run", "all"], env, tmp_path / "all-in-one.log", free_port())
    url = f"http://127.0.0.1:{process.port}"
    return Platform(urls=dict.fromkeys(SERVICES, url), processes={"all": process})


def create_shop(platform: Platform) -> dict[str, str]:
    response = httpx.post(
        f"{platform.url('customer-api')}/v1/shops",
        json={"name": "Kissa Tea", "timezone": "Asia/Tokyo", "currency": "JPY", "locale": "ja"},
        headers={"Authorization": f"Bearer {platform.admin_token}"},
    )
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['api_key']}"}
