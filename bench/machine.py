"""What the figures were measured on."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import sqlalchemy as sa

from bench.infra import KAFKA_BOOTSTRAP, PG_ADMIN_URL

REPO = Path(__file__).resolve().parent.parent


def _cpuinfo_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                kib = int(line.split()[1])
                return f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError):
        pass
    return "unknown"


def _cores() -> str:
    logical = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical
    return f"{usable} usable ({logical} logical)" if usable != logical else str(logical)


def _postgres() -> str:
    try:
        engine = sa.create_engine(PG_ADMIN_URL)
        with engine.connect() as connection:
            version = str(connection.execute(sa.text("SHOW server_version")).scalar_one())
        engine.dispose()
        return f"PostgreSQL {version.split()[0]}"
    except Exception as exc:
        return f"unknown ({type(exc).__name__})"


def _kafka() -> str:
    """The broker's version: from the jars of the local broker (deploy/kafka), else its API range."""
    libs = REPO / "var" / "cache" / "kafka-libs"
    if libs.is_dir():
        for jar in sorted(libs.glob("kafka_2.*-*.jar")):
            version = jar.stem.split("-", 1)[1]
            if version[:1].isdigit():
                return f"Apache Kafka {version} (KRaft, single node, deploy/kafka)"
    try:
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=KAFKA_BOOTSTRAP, client_id="retention-bench")
        try:
            api = admin._client.check_version()  # noqa: SLF001 - the only way kafka-python tells
        finally:
            admin.close()
        return f"Apache Kafka (API ≥ {'.'.join(map(str, api))})"
    except Exception as exc:
        return f"unknown ({type(exc).__name__})"


def _package(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _crc32c() -> str:
    """kafka-python checksums each record batch with CRC32C: in C if `crc32c` is installed, else in Python."""
    from kafka.record import util

    return "C (crc32c package)" if getattr(util, "crc32c_c", None) is not None else "pure Python (slow)"


def _code() -> str:
    """The commit measured, and whether the work tree had changes on top of it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{commit} + uncommitted changes" if dirty else commit


def _load() -> str:
    try:
        one, five, fifteen = os.getloadavg()
        return f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min) at the start"
    except OSError:
        return "unknown"


def busy_note() -> str | None:
    """A warning when other work was already loading the machine as the run started."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if load < 0.75 * cores:
        return None
    return (
        f"The machine was already busy when the run started (load {load:.1f} on {cores} cores): "
        "the figures are lower than an idle machine would give."
    )


def describe() -> dict[str, str]:
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "code": _code(),
        "CPU": _cpuinfo_model(),
        "cores": _cores(),
        "RAM": _ram(),
        "load average": _load(),
        "OS": f"{platform.system()} {platform.release()}",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "Kafka": _kafka(),
        "PostgreSQL": _postgres(),
        "kafka-python": f"{_package('kafka-python')}, CRC32C in {_crc32c()}",
        "SQLAlchemy / psycopg": f"{_package('SQLAlchemy')} / {_package('psycopg')}",
        "FastAPI / uvicorn / httpx": f"{_package('fastapi')} / {_package('uvicorn')} / {_package('httpx')}",
    }
