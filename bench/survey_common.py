"""What the survey benchmarks share: a migrated survey database with one shop and its default surveys,
and invitations made in bulk (the invitation path is not what these benchmarks measure)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from retention_shared.clock import SystemClock
from retention_shared.config import Mode, PlatformSettings
from retention_shared.events.envelope import build_envelope
from retention_shared.platform import Assembly, assemble
from retention_shared.runtime import service_named
from survey_service.adapters import tables
from survey_service.domain.tokens import InvitationSigner

ADMIN_TOKEN = "bench-admin-token"
SIGNING_SECRET = "bench-signing-secret"
SEGMENTS = ("champions", "loyal", "new", "dormant", "at_risk", "")
CONTEXTS = (("order", "purchase"), ("ticket", "ticket"), ("playbook_run", "playbook"))


def survey_settings(database_url: str, data_dir: Path) -> PlatformSettings:
    return PlatformSettings(
        mode=Mode.DISTRIBUTED,
        survey_database_url=database_url,
        admin_token=ADMIN_TOKEN,
        signing_secret=SIGNING_SECRET,
        data_dir=data_dir,
        rate_limit="1000000/second",
    )


def survey_env(database_url: str, data_dir: Path) -> dict[str, str]:
    return {
        "RETENTION_MODE": "distributed",
        "RETENTION_SURVEY_DATABASE_URL": database_url,
        "RETENTION_ADMIN_TOKEN": ADMIN_TOKEN,
        "RETENTION_SIGNING_SECRET": SIGNING_SECRET,
        "RETENTION_DATA_DIR": str(data_dir),
        "RETENTION_RATE_LIMIT": "1000000/second",
        "RETENTION_LOG_LEVEL": "WARNING",
    }


def survey_assembly(database_url: str, data_dir: Path) -> Assembly:
    """The survey-service wired in this process on the given (migrated here) database."""
    return assemble([service_named("survey-service")], survey_settings(database_url, data_dir), migrate=True)


def register_shop(assembly: Assembly) -> str:
    """A shop, as the survey-service learns of it: through `shop_registered` (which adds its surveys)."""
    runtime = assembly.runtimes[0]
    shop_id = f"shop_{secrets.token_hex(6)}"
    event = build_envelope(
        type="shop_registered",
        source="bench",
        shop_id=shop_id,
        customer_id=None,
        data={"name": "Bench Tea", "timezone": "Asia/Tokyo", "currency": "JPY", "locale": "ja"},
        time=datetime.now(UTC),
    )
    with runtime.uow_factory() as uow:
        runtime.handlers["shop_registered"](event, uow)
        uow.commit()
    return shop_id


def default_survey_id(engine: sa.Engine, shop_id: str, kind: str = "nps") -> str:
    with engine.connect() as connection:
        return str(
            connection.execute(
                sa.select(tables.surveys.c.survey_id).where(
                    tables.surveys.c.shop_id == shop_id, tables.surveys.c.default_kind == kind
                )
            ).scalar_one()
        )


@dataclass(frozen=True)
class Invited:
    tokens: list[str]


def bulk_invitations(engine: sa.Engine, shop_id: str, survey_id: str, count: int) -> Invited:
    """`count` open invitations to the survey, one per customer, written straight to the table."""
    signer = InvitationSigner(SIGNING_SECRET)
    now = SystemClock().now()
    expires = now + timedelta(days=30)
    rows, tokens = [], []
    for number in range(count):
        token_id = signer.new_token_id()
        context_type, touchpoint = CONTEXTS[number % len(CONTEXTS)]
        segment = SEGMENTS[number % len(SEGMENTS)]
        rows.append(
            {
                "invitation_id": f"inv_{secrets.token_hex(8)}",
                "token_id": token_id,
                "shop_id": shop_id,
                "survey_id": survey_id,
                "customer_id": f"cust-{number}",
                "kind": "nps",
                "context_type": context_type,
                "context_id": f"ctx-{number}",
                "touchpoint": touchpoint,
                "segment": segment or None,
                "locale": "ja",
                "idempotency_key": None,
                "created_at": now,
                "expires_at": expires,
            }
        )
        tokens.append(signer.sign(token_id, expires))
    with engine.begin() as connection:
        for start in range(0, len(rows), 5000):
            connection.execute(sa.insert(tables.invitations), rows[start : start + 5000])
    return Invited(tokens)
