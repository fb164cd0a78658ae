"""The documents users rely on stay true to the code: event catalogue and configuration table."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import yaml

from retention_shared.config import PlatformSettings
from retention_shared.events.catalogue import CATALOGUE
from retention_shared.events.docs import asyncapi_document, event_schema
from retention_shared.events.envelope import build_envelope

ROOT = Path(__file__).resolve().parents[3]
EVENTS_DOCS = ROOT / "docs" / "events"


class TestEventCatalogueDocuments:
    def test_committed_schemas_match_the_models(self) -> None:
        for event_type in CATALOGUE:
            committed = json.loads((EVENTS_DOCS / f"{event_type}.schema.json").read_text())
            assert committed == event_schema(event_type), f"{event_type} is stale: run `make catalogue`"

    def test_committed_asyncapi_matches_the_models(self) -> None:
        committed = yaml.safe_load((EVENTS_DOCS / "asyncapi.yaml").read_text())
        assert committed == asyncapi_document(), "asyncapi.yaml is stale: run `make catalogue`"

    def test_schemas_are_valid_and_accept_a_real_envelope(self) -> None:
        envelope = build_envelope(
            type="purchase_made",
            source="t",
            shop_id="shop_1",
            customer_id="c1",
            time=datetime.now(UTC),
            data={
                "order_id": "o1",
                "amount": "12.50",
                "currency": "EUR",
                "items": [{"sku": "A", "quantity": 1, "unit_price": "12.50"}],
            },
        )
        schema = event_schema("purchase_made")
        jsonschema.Draft202012Validator.check_schema(schema)
        jsonschema.validate(json.loads(envelope.model_dump_json()), schema)
        broken = json.loads(envelope.model_dump_json())
        broken["data"]["amount"] = "-1"
        assert list(jsonschema.Draft202012Validator(schema).iter_errors(broken))

    def test_every_event_type_is_in_the_asyncapi_document(self) -> None:
        assert set(asyncapi_document()["components"]["messages"]) == set(CATALOGUE)


def test_the_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [
        f"RETENTION_{name.upper()}"
        for name in PlatformSettings.model_fields
        if f"RETENTION_{name.upper()}" not in readme
    ]
    assert missing == []
