"""The key directory answers from memory for a few seconds, then asks the database again, so a
revocation takes effect within its time to live; requests with a remembered key need no I/O."""

from __future__ import annotations

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, MetaData, create_engine, insert, update
from sqlalchemy.pool import StaticPool

from retention_shared.tenancy import CachedKeyDirectory, Principal, hash_api_key, tenancy_replica_tables
from retention_shared.web import create_app, principal_dependency

KEY = "rk_live_known"
metadata = MetaData()
tables = tenancy_replica_tables(metadata)


@pytest.fixture
def engine() -> Engine:
    # One shared in-memory database: the HTTP lookups run on worker threads.
    engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(
            insert(tables.api_keys).values(
                key_id="key-1", shop_id="shop-a", key_hash=hash_api_key(KEY), scopes=["customers:read"]
            )
        )
    return engine


def _revoke(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(update(tables.api_keys).values(revoked=True))


def test_an_answer_is_remembered_only_after_a_lookup(engine: Engine) -> None:
    directory = CachedKeyDirectory(engine, tables.api_keys, ttl_s=60)
    assert directory.remembered(hash_api_key(KEY)) == (False, None)
    principal = directory.lookup(hash_api_key(KEY))
    assert principal == Principal("shop-a", "key-1", frozenset({"customers:read"}))
    assert directory.remembered(hash_api_key(KEY)) == (True, principal)


def test_a_revocation_is_seen_once_the_answer_expires(engine: Engine) -> None:
    directory = CachedKeyDirectory(engine, tables.api_keys, ttl_s=0.0)
    assert directory.lookup(hash_api_key(KEY)) is not None
    _revoke(engine)
    assert directory.remembered(hash_api_key(KEY)) == (False, None)
    assert directory.lookup(hash_api_key(KEY)) is None


def test_the_http_dependency_uses_the_remembered_answer_until_it_expires(engine: Engine) -> None:
    directory = CachedKeyDirectory(engine, tables.api_keys, ttl_s=60)
    authenticate = principal_dependency(lambda _request: directory)
    app: FastAPI = create_app("probe", "probe", [])

    @app.get("/whoami")
    def whoami(principal: Principal = Depends(authenticate)) -> dict[str, str]:
        return {"shop": principal.shop_id}

    client = TestClient(app)
    headers = {"Authorization": f"Bearer {KEY}"}
    assert client.get("/whoami", headers=headers).json() == {"shop": "shop-a"}
    _revoke(engine)
    # Still remembered: within the time to live the database is not asked again.
    assert client.get("/whoami", headers=headers).status_code == 200
    directory._ttl_s = 0.0
    assert client.get("/whoami", headers=headers).status_code == 401


def test_answers_for_random_keys_are_bounded_and_the_oldest_go_first(engine: Engine) -> None:
    directory = CachedKeyDirectory(engine, tables.api_keys, ttl_s=60, max_entries=3)
    directory.lookup(hash_api_key(KEY))
    for n in range(3):
        directory.lookup(hash_api_key(f"random-{n}"))
    assert len(directory._cache) == 3
    assert directory.remembered(hash_api_key(KEY)) == (False, None)  # the oldest answer went
    assert hash_api_key("random-2") in directory._cache
