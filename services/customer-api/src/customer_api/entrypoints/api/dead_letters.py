"""The dead-letter topics for the platform operator: what waits in each, and replaying it.

The customer-api serves these for the whole platform, as the front door (and the console's host):
the dead letters of every service's consumers are in the same broker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from retention_shared.events.topics import ALL_TOPICS
from retention_shared.messaging.replay import dead_letter_backlog, replay_dead_letters
from retention_shared.problems import Problem
from retention_shared.runtime import PlatformContext

# A replay stops when no dead letter has arrived for this long (the topic is drained).
REPLAY_IDLE_TIMEOUT_S = 3.0


class DeadLetterTopicRead(BaseModel):
    topic: str = Field(description="The original topic, where a replay publishes the records again")
    dead_letter_topic: str
    waiting: int = Field(description="Dead letters not replayed yet")


class DeadLetterList(BaseModel):
    topics: list[DeadLetterTopicRead]


class ReplayResult(BaseModel):
    topic: str
    replayed: int


def build_dead_letter_router(*, platform: PlatformContext, operator: Callable[[Request], None]) -> APIRouter:
    router = APIRouter(prefix="/v1/dlq", tags=["operations"])

    def topic_names() -> list[str]:
        return [platform.topic_name(topic) for topic in ALL_TOPICS]

    def unreachable(error: Exception) -> Problem:
        return Problem(503, "Service Unavailable", f"The message broker cannot be reached: {error}")

    @router.get("", response_model=DeadLetterList)
    def list_dead_letters(_: None = Depends(operator)) -> DeadLetterList:
        """Every topic's dead letters that wait for a replay (operator only)."""
        try:
            backlog = dead_letter_backlog(platform.bus, topic_names())
        except Exception as error:
            raise unreachable(error) from error
        return DeadLetterList(
            topics=[
                DeadLetterTopicRead(topic=t.topic, dead_letter_topic=t.dead_letter_topic, waiting=t.waiting)
                for t in backlog
            ]
        )

    @router.post("/{topic}/replay", response_model=ReplayResult)
    def replay(
        topic: Annotated[str, Path(description="The original topic, e.g. retention.activity.v1")],
        limit: Annotated[int, Query(ge=1, le=100_000, description="Replay at most this many")] = 1000,
        _: None = Depends(operator),
    ) -> ReplayResult:
        """Publish a topic's dead letters back to it, once the cause of the failures is fixed
        (operator only). Their event ids are unchanged: a consumer that had applied one drops it."""
        if topic not in topic_names():
            raise Problem(404, "Not Found", f"No topic named '{topic}'")
        try:
            replayed = replay_dead_letters(
                platform.bus, topic, limit=limit, idle_timeout_s=REPLAY_IDLE_TIMEOUT_S
            )
        except Exception as error:
            raise unreachable(error) from error
        return ReplayResult(topic=topic, replayed=replayed)

    return router
