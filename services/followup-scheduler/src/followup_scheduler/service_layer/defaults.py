"""The default playbooks every new shop gets, from the seeds."""

from __future__ import annotations

import secrets
from functools import cache
from importlib.resources import files

import yaml

from followup_scheduler.domain.playbook import Playbook
from followup_scheduler.service_layer.uow import SchedulerUnitOfWork


@cache
def default_playbooks() -> tuple[Playbook, ...]:
    documents = []
    for resource in sorted(files("followup_scheduler.playbooks").iterdir(), key=lambda r: r.name):
        if resource.name.endswith(".yaml"):
            documents.append(Playbook.model_validate(yaml.safe_load(resource.read_text("utf-8"))))
    return tuple(documents)


def ensure_default_playbooks(uow: SchedulerUnitOfWork, shop_id: str) -> None:
    """Install the defaults once per shop (on shop_registered, or on the shop's first event)."""
    if uow.repo.has_playbooks(shop_id):
        return
    for playbook in default_playbooks():
        uow.repo.add_playbook(
            {
                "id": f"pb_{secrets.token_hex(8)}",
                "shop_id": shop_id,
                "key": playbook.key,
                "version": 1,
                "enabled": True,
                "trigger_event": playbook.trigger.event,
                "document": playbook.model_dump(mode="json", by_alias=True),
                "created_at": uow.clock.now(),
            }
        )
