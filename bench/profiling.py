"""Summaries of the cProfile files written by `bench.profiled`, as report tables."""

from __future__ import annotations

import pstats
from pathlib import Path

from bench.registry import Table

# Where the project's own code lives (the shared kit and the services' packages).
PROJECT_MARKERS = (
    "retention_shared",
    "customer_api",
    "segmentation_worker",
    "followup_scheduler",
    "survey_service",
)
# Library functions whose cost per call tells where a batch goes.
LIBRARY_HOT_SPOTS = (
    ("record/util.py", "calc_crc32c"),  # kafka-python's record batch checksum
    ("consumer/group.py", "poll"),  # KafkaConsumer.poll
    ("producer/kafka.py", "flush"),
    ("psycopg/cursor.py", "execute"),
    ("psycopg/cursor.py", "executemany"),
    ("orm/session.py", "commit"),
)
# Threads blocked on I/O or on each other: not work, so left out of the own-time ranking.
IDLE = ("select.epoll", "select.select", "_thread.lock", "time.sleep", "'wait' of", "_queue")

Key = tuple[str, int, str]


def _label(key: Key) -> str:
    filename, line, name = key
    if filename == "~":
        return name
    parts = Path(filename).parts
    return f"{'/'.join(parts[-2:])}:{line}({name})"


def _is_project(key: Key) -> bool:
    return any(f"/{marker}/" in key[0] for marker in PROJECT_MARKERS)


def profile_table(title: str, path: Path, top: int = 12) -> Table:
    stats = pstats.Stats(str(path))
    entries: dict[Key, tuple[int, int, float, float, dict]] = stats.stats  # type: ignore[attr-defined]

    def row(key: Key) -> list[str]:
        _primitive, calls, own, cumulative, _callers = entries[key]
        per_call = f"{cumulative / calls * 1e3:,.2f}" if calls else ""
        return [_label(key), f"{calls:,}", f"{own:.2f}", f"{cumulative:.2f}", per_call]

    rows = [["**project code called more than once, by cumulative time**", "", "", "", ""]]
    repeated = (key for key in entries if _is_project(key) and entries[key][1] > 1)
    project = sorted(repeated, key=lambda k: entries[k][3], reverse=True)
    rows += [row(key) for key in project[:top]]
    rows.append(["**library hot spots**", "", "", "", ""])
    for suffix, name in LIBRARY_HOT_SPOTS:
        rows += [row(key) for key in entries if key[2] == name and key[0].endswith(suffix)]
    rows.append(["**by own time (waiting on I/O and locks left out)**", "", "", "", ""])
    busy = [key for key in entries if not any(marker in key[2] for marker in IDLE)]
    busy.sort(key=lambda k: entries[k][2], reverse=True)
    rows += [row(key) for key in busy[:top]]
    return Table(title, ["function", "calls", "own s", "cumulative s", "ms per call"], rows)
