"""Playbook management: validate (schema and templates), create, version, enable, delete."""

from __future__ import annotations

import re
import secrets
from typing import Any

from pydantic import ValidationError

from followup_scheduler.adapters.rendering import Renderer
from followup_scheduler.domain.playbook import Playbook
from followup_scheduler.service_layer.context import sample_contexts
from followup_scheduler.service_layer.handlers import publish_cancelled
from followup_scheduler.service_layer.uow import SchedulerUnitOfWork

# pydantic puts the member of a union it tried into the error location; a JSON path has no use for it.
_UNION_TAGS = {"timedelta", "str", "int", "bool", "float", "decimal", "list", "dict", "none"}
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


class InvalidPlaybook(Exception):
    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['path']}: {e['message']}" for e in errors))
        self.errors = errors


class PlaybookConflict(Exception):
    pass


def json_path(location: tuple[Any, ...]) -> str:
    path = "$"
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, str):
            if part in _UNION_TAGS or part[:1].isupper() or "[" in part or not _NAME.match(part):
                continue
            path += f".{part}"
    return path


def validate_document(document: Any, renderer: Renderer) -> Playbook:
    """The playbook, or InvalidPlaybook naming the JSON path of every error.

    Templates are checked by rendering every step in every locale with sample data, so a typo
    is caught now rather than when the first customer's message is due."""
    if not isinstance(document, dict):
        raise InvalidPlaybook([{"path": "$", "message": "a playbook is a JSON object"}])
    try:
        playbook = Playbook.model_validate(document)
    except ValidationError as exc:
        raise InvalidPlaybook(
            [
                {"path": json_path(tuple(error["loc"])), "message": error["msg"]}
                for error in exc.errors(include_url=False)
            ]
        ) from exc
    errors = []
    for index, step in enumerate(playbook.steps):
        contexts = sample_contexts(playbook.trigger.event, step.action)
        for locale, message in renderer.check(step.template, contexts, playbook.templates):
            path = f"$.steps[{index}].template"
            if step.template in playbook.templates:
                path = f"$.templates.{step.template}"
            errors.append({"path": path, "message": f"{locale}: {message}" if locale != "*" else message})
    if errors:
        raise InvalidPlaybook(errors)
    return playbook


def stored_form(playbook: Playbook) -> dict[str, Any]:
    return playbook.model_dump(mode="json", by_alias=True, exclude_defaults=False)


def create_playbook(
    uow: SchedulerUnitOfWork, shop_id: str, playbook: Playbook, *, enabled: bool = True
) -> dict[str, Any]:
    if uow.repo.playbook_by_key(shop_id, playbook.key) is not None:
        raise PlaybookConflict(f"a playbook with key {playbook.key!r} exists")
    now = uow.clock.now()
    row = {
        "id": f"pb_{secrets.token_hex(8)}",
        "shop_id": shop_id,
        "key": playbook.key,
        "version": 1,
        "enabled": enabled,
        "trigger_event": playbook.trigger.event,
        "document": stored_form(playbook),
        "created_at": now,
        "updated_at": now,
    }
    uow.repo.add_playbook(row)
    return row


def update_playbook(uow: SchedulerUnitOfWork, row: dict[str, Any], playbook: Playbook) -> int:
    """Save a new version; runs already started keep the version they started with."""
    if playbook.key != row["key"]:
        raise InvalidPlaybook(
            [{"path": "$.key", "message": f"the key of a playbook cannot change (it is {row['key']!r})"}]
        )
    version = int(row["version"]) + 1
    uow.repo.save_playbook_version(
        row["id"], version, stored_form(playbook), playbook.trigger.event, uow.clock.now()
    )
    return version


def delete_playbook(uow: SchedulerUnitOfWork, row: dict[str, Any]) -> int:
    """Delete a playbook and cancel the pending steps of its active runs; returns how many."""
    now = uow.clock.now()
    reason = "playbook deleted"
    cancelled = 0
    for run_id in uow.repo.active_run_ids(row["shop_id"], row["key"]):
        for step in uow.repo.end_run(run_id, "cancelled", reason, now):
            publish_cancelled(uow, step, reason)
            cancelled += 1
    uow.repo.delete_playbook(row["id"])
    return cancelled
