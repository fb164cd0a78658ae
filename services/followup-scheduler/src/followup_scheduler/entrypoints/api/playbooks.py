"""Playbooks over HTTP: CRUD with versions, YAML import/export, dry runs, previews and results."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, Field

from followup_scheduler.adapters.rendering import Renderer
from followup_scheduler.domain.playbook import TRIGGER_EVENTS, Playbook, playbook_json_schema
from followup_scheduler.service_layer import playbooks as use_cases
from followup_scheduler.service_layer import queries
from followup_scheduler.service_layer.uow import SchedulerUnitOfWork
from retention_shared.events.envelope import ID_PATTERN
from retention_shared.problems import Problem, not_found
from retention_shared.tenancy import Principal
from retention_shared.web import Authenticator, require_scope

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")
PlaybookId = Annotated[str, Path(pattern=r"^pb_[0-9a-f]{16}$")]
_DOCUMENT_BODY = {
    "requestBody": {
        "required": True,
        "description": "A playbook document; its JSON Schema is served at /v1/playbooks/schema",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/yaml": {"schema": {"type": "object"}},
        },
    }
}


class PlaybookRead(BaseModel):
    id: str
    key: str
    version: int
    enabled: bool
    trigger_event: str
    created_at: datetime
    updated_at: datetime | None
    document: dict[str, Any]


class PlaybookList(BaseModel):
    playbooks: list[PlaybookRead]


class VersionRead(BaseModel):
    version: int
    created_at: datetime
    document: dict[str, Any]


class VersionList(BaseModel):
    versions: list[VersionRead]


class SimulatedEvent(BaseModel):
    type: str = Field(description="An event type, e.g. purchase_made")
    id: str | None = Field(None, pattern=ID_PATTERN)
    occurred_at: datetime | None = Field(None, description="Default: now")
    data: dict[str, Any] = Field(default_factory=dict)


class SimulationRequest(BaseModel):
    customer_id: str = Field(pattern=ID_PATTERN)
    customer: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides of what is known of the customer: timezone, segment, tier, consents, email…",
    )
    event: SimulatedEvent


class SimulatedStep(BaseModel):
    key: str
    action: str
    priority: str
    scheduled: bool
    due_at: datetime | None
    send_at: datetime | None
    channel: str | None
    outcome: str = Field(description="send, skip, or not_scheduled")
    reasons: list[str]


class SimulationResult(BaseModel):
    starts: bool
    reasons: list[str]
    business_key: str
    holdout_group: str
    steps: list[SimulatedStep]


class PreviewRead(BaseModel):
    step: str
    locale: str
    subject: str
    text: str
    html: str | None


class GroupResult(BaseModel):
    runs: int
    converted: int
    conversion_rate: float | None


class ResultsRead(BaseModel):
    goal: dict[str, Any]
    treated: GroupResult
    control: GroupResult
    uplift: float | None = Field(description="Treated minus control conversion rate")
    uplift_ci95: list[float | None] | None
    relative_uplift: float | None
    runs_still_in_goal_window: int
    runs_in_global_holdout: int
    control_group_percent: float


def _read(row: dict[str, Any]) -> PlaybookRead:
    return PlaybookRead(
        id=row["id"],
        key=row["key"],
        version=row["version"],
        enabled=row["enabled"],
        trigger_event=row["trigger_event"],
        created_at=row["created_at"],
        updated_at=row.get("updated_at"),
        document=row["document"],
    )


def wants_yaml(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return any(kind in accept for kind in YAML_TYPES)


def yaml_response(document: dict[str, Any]) -> Response:
    return Response(
        yaml.safe_dump(document, allow_unicode=True, sort_keys=False), media_type="application/yaml"
    )


async def read_document(request: Request) -> Any:
    """The playbook in the body, as JSON or YAML according to its Content-Type."""
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    raw = await request.body()
    if len(raw) > 512_000:
        raise Problem(413, "Content Too Large", "A playbook is at most 500 KB")
    if content_type in YAML_TYPES:
        try:
            return yaml.safe_load(raw.decode("utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise _invalid([{"path": "$", "message": f"malformed YAML: {exc}"}]) from exc
    if content_type in ("application/json", ""):
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise _invalid([{"path": "$", "message": f"malformed JSON: {exc}"}]) from exc
    raise Problem(415, "Unsupported Media Type", "Send application/json or application/yaml")


def _invalid(errors: list[dict[str, str]]) -> Problem:
    return Problem(
        422,
        "Unprocessable Content",
        "The playbook is invalid",
        # `path` is the JSON path in the document; `field` is the same place in the house style.
        errors=[{"path": e["path"], "field": e["path"], "message": e["message"]} for e in errors],
    )


def build_playbook_router(
    *,
    uow_factory: Callable[[], SchedulerUnitOfWork],
    authenticate: Authenticator,
    renderer: Renderer,
) -> APIRouter:
    router = APIRouter(prefix="/v1/playbooks", tags=["playbooks"])
    can_read = require_scope(authenticate, "customers:read")
    can_manage = require_scope(authenticate, "admin")

    def validated(document: Any) -> Playbook:
        try:
            return use_cases.validate_document(document, renderer)
        except use_cases.InvalidPlaybook as exc:
            raise _invalid(exc.errors) from exc

    def owned(uow: SchedulerUnitOfWork, principal: Principal, playbook_id: str) -> dict[str, Any]:
        row = uow.repo.playbook(principal.shop_id, playbook_id)
        if row is None:
            raise not_found("playbook")
        return row

    @router.get("/schema", response_model=dict[str, Any])
    def schema() -> dict[str, Any]:
        """The published JSON Schema of a playbook document."""
        return playbook_json_schema()

    @router.get("", response_model=PlaybookList)
    def list_playbooks(principal: Principal = Depends(can_read)) -> PlaybookList:
        """The shop's playbooks with their current version."""
        with uow_factory() as uow:
            rows = uow.repo.all_playbooks(principal.shop_id)
        return PlaybookList(playbooks=[_read(row) for row in rows])

    @router.post("/validate", openapi_extra=_DOCUMENT_BODY, response_model=dict[str, Any])
    async def validate(request: Request, principal: Principal = Depends(can_read)) -> dict[str, Any]:
        """Check a playbook (schema and templates) without saving it."""
        playbook = validated(await read_document(request))
        return {"valid": True, "key": playbook.key}

    @router.post("", status_code=201, openapi_extra=_DOCUMENT_BODY, response_model=PlaybookRead)
    async def create(request: Request, principal: Principal = Depends(can_manage)) -> PlaybookRead:
        """Create a playbook from JSON or YAML (`Content-Type: application/yaml`)."""
        playbook = validated(await read_document(request))
        enabled = request.query_params.get("enabled", "true").lower() != "false"
        with uow_factory() as uow:
            try:
                row = use_cases.create_playbook(uow, principal.shop_id, playbook, enabled=enabled)
            except use_cases.PlaybookConflict as exc:
                raise Problem(409, "Conflict", str(exc)) from exc
            uow.commit()
        return _read(row)

    @router.get(
        "/{playbook_id}",
        response_model=PlaybookRead,
        responses={200: {"content": {"application/yaml": {}}}},
    )
    def get(playbook_id: PlaybookId, request: Request, principal: Principal = Depends(can_read)) -> Any:
        """One playbook; with `Accept: application/yaml`, its document as YAML (for export)."""
        with uow_factory() as uow:
            row = owned(uow, principal, playbook_id)
        return yaml_response(row["document"]) if wants_yaml(request) else _read(row)

    @router.put("/{playbook_id}", openapi_extra=_DOCUMENT_BODY, response_model=PlaybookRead)
    async def replace(
        playbook_id: PlaybookId, request: Request, principal: Principal = Depends(can_manage)
    ) -> PlaybookRead:
        """Save a new version. Runs already started keep following the version they started with."""
        playbook = validated(await read_document(request))
        with uow_factory() as uow:
            row = uow.repo.playbook(principal.shop_id, playbook_id, lock=True)
            if row is None:
                raise not_found("playbook")
            try:
                use_cases.update_playbook(uow, row, playbook)
            except use_cases.InvalidPlaybook as exc:
                raise _invalid(exc.errors) from exc
            uow.commit()
            updated = owned(uow, principal, playbook_id)
        return _read(updated)

    @router.delete("/{playbook_id}", status_code=204)
    def delete(playbook_id: PlaybookId, principal: Principal = Depends(can_manage)) -> Response:
        """Delete a playbook; the pending steps of its active runs are cancelled."""
        with uow_factory() as uow:
            row = owned(uow, principal, playbook_id)
            use_cases.delete_playbook(uow, row)
            uow.commit()
        return Response(status_code=204)

    def set_enabled(playbook_id: str, principal: Principal, enabled: bool) -> PlaybookRead:
        with uow_factory() as uow:
            owned(uow, principal, playbook_id)
            uow.repo.set_playbook_enabled(playbook_id, enabled, uow.clock.now())
            uow.commit()
            return _read(owned(uow, principal, playbook_id))

    @router.post("/{playbook_id}/enable", response_model=PlaybookRead)
    def enable(playbook_id: PlaybookId, principal: Principal = Depends(can_manage)) -> PlaybookRead:
        """Start triggering runs again."""
        return set_enabled(playbook_id, principal, True)

    @router.post("/{playbook_id}/disable", response_model=PlaybookRead)
    def disable(playbook_id: PlaybookId, principal: Principal = Depends(can_manage)) -> PlaybookRead:
        """Stop starting new runs; runs already started go on."""
        return set_enabled(playbook_id, principal, False)

    @router.get("/{playbook_id}/versions", response_model=VersionList)
    def versions(playbook_id: PlaybookId, principal: Principal = Depends(can_read)) -> VersionList:
        """Every saved version of the playbook."""
        with uow_factory() as uow:
            owned(uow, principal, playbook_id)
            rows = uow.repo.playbook_versions(playbook_id)
        return VersionList(
            versions=[
                VersionRead(version=r["version"], created_at=r["created_at"], document=r["document"])
                for r in rows
            ]
        )

    @router.post("/{playbook_id}/simulate", response_model=SimulationResult)
    def simulate(
        playbook_id: PlaybookId, body: SimulationRequest, principal: Principal = Depends(can_read)
    ) -> SimulationResult:
        """Dry run: which steps this event would schedule for the customer, when, and why or why not."""
        if body.event.type not in TRIGGER_EVENTS:
            raise Problem(
                422,
                "Unprocessable Content",
                "Unknown trigger event",
                errors=[{"field": "body.event.type", "message": f"one of {', '.join(TRIGGER_EVENTS)}"}],
            )
        with uow_factory() as uow:
            row = owned(uow, principal, playbook_id)
            now = uow.clock.now()
            outcome = queries.simulate(
                uow,
                shop_id=principal.shop_id,
                playbook=Playbook.model_validate(row["document"]),
                customer_id=body.customer_id,
                customer_overrides=body.customer,
                event_type=body.event.type,
                event_id=body.event.id or "simulated",
                event_time=body.event.occurred_at or now,
                data=body.event.data,
            )
        return SimulationResult.model_validate(outcome)

    @router.get("/{playbook_id}/steps/{step_key}/preview", response_model=PreviewRead)
    def preview(
        playbook_id: PlaybookId,
        step_key: Annotated[str, Path(pattern=r"^[a-z][a-z0-9_]{0,63}$")],
        customer_id: Annotated[str, Query(pattern=ID_PATTERN)],
        principal: Principal = Depends(can_read),
    ) -> PreviewRead:
        """The step rendered for a customer (their latest run of this playbook, or sample trigger data)."""
        with uow_factory() as uow:
            row = owned(uow, principal, playbook_id)
            playbook = Playbook.model_validate(row["document"])
            if all(step.key != step_key for step in playbook.steps):
                raise not_found("step")
            try:
                outcome = queries.preview(
                    uow,
                    renderer,
                    shop_id=principal.shop_id,
                    playbook_row=row,
                    playbook=playbook,
                    step_key=step_key,
                    customer_id=customer_id,
                )
            except Exception as exc:  # a template failing on this customer's data is worth showing
                raise Problem(422, "Unprocessable Content", f"the template failed: {exc}") from exc
        if outcome is None:
            raise not_found("customer")
        rendered, locale = outcome
        return PreviewRead(
            step=step_key, locale=locale, subject=rendered.subject, text=rendered.text, html=rendered.html
        )

    @router.get("/{playbook_id}/results", response_model=ResultsRead)
    def results(playbook_id: PlaybookId, principal: Principal = Depends(can_read)) -> ResultsRead:
        """Treated versus control conversion, the uplift and its 95% confidence interval."""
        with uow_factory() as uow:
            row = owned(uow, principal, playbook_id)
            outcome = queries.results(
                uow, shop_id=principal.shop_id, playbook=Playbook.model_validate(row["document"])
            )
        outcome["goal"] = {**outcome["goal"], "within": _iso(outcome["goal"]["within"])}
        return ResultsRead.model_validate(outcome)

    return router


def _iso(delta: timedelta) -> str:
    return f"P{delta.days}D" if delta.seconds == 0 else f"P{delta.days}DT{delta.seconds}S"
