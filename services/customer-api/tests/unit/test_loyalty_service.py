from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, insert, select
from sqlalchemy.orm import sessionmaker

from customer_api.adapters import tables
from customer_api.adapters.loyalty_tables import loyalty_accounts, loyalty_ledger, loyalty_orders
from customer_api.domain.loyalty import DEFAULT_RULES, rules_to_document
from customer_api.service_layer import loyalty
from customer_api.service_layer.uow import CustomerApiUnitOfWork
from retention_shared.clock import ManualClock
from retention_shared.db import create_db_engine
from retention_shared.problems import Problem

SHOP = "shop_1"
OTHER_SHOP = "shop_2"
UowFactory = Callable[[], CustomerApiUnitOfWork]
_ids = count(1)


@dataclass(frozen=True)
class Activity:
    """What ingestion hands to the loyalty programme: an accepted, validated event."""

    type: str
    customer_id: str
    occurred_at: datetime
    data: dict[str, Any]
    id: str = field(default_factory=lambda: f"evt-{next(_ids)}")


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'customer_api.db'}")
    tables.metadata.create_all(engine)
    with engine.begin() as connection:
        for shop_id, currency in ((SHOP, "JPY"), (OTHER_SHOP, "JPY")):
            connection.execute(
                insert(tables.shops).values(
                    id=shop_id,
                    name=shop_id,
                    timezone="Asia/Tokyo",
                    currency=currency,
                    locale="ja",
                    created_at=datetime(2026, 1, 1, tzinfo=UTC),
                )
            )
    yield engine
    engine.dispose()


@pytest.fixture
def uow_factory(engine: Engine, manual_clock: ManualClock) -> UowFactory:
    return partial(
        CustomerApiUnitOfWork,
        sessionmaker(engine, expire_on_commit=False),
        tables=tables.messaging,
        clock=manual_clock,
        source="customer-api",
    )


class Shop:
    """Drives the programme as ingestion and the API do, one transaction per call."""

    def __init__(
        self, uow_factory: UowFactory, clock: ManualClock, engine: Engine, shop_id: str = SHOP
    ) -> None:
        self.uow_factory = uow_factory
        self.clock = clock
        self.engine = engine
        self.shop_id = shop_id

    def purchase(
        self,
        order_id: str,
        amount: str,
        *,
        customer: str = "c1",
        at: datetime | None = None,
        currency: str = "JPY",
    ) -> Activity:
        data = {"order_id": order_id, "amount": amount, "currency": currency}
        return Activity("purchase_made", customer, at or self.clock.now(), data)

    def refund(
        self, order_id: str, amount: str, *, customer: str = "c1", at: datetime | None = None
    ) -> Activity:
        data = {"order_id": order_id, "amount": amount, "currency": "JPY"}
        return Activity("refund_issued", customer, at or self.clock.now(), data)

    def ingest(self, *events: Activity) -> None:
        with self.uow_factory() as uow:
            loyalty.apply_loyalty_for_events(uow=uow, shop_id=self.shop_id, events=list(events))
            uow.commit()

    def member(self, customer: str = "c1", **kwargs: Any) -> dict[str, Any]:
        return loyalty.read_loyalty(
            uow=self.uow_factory(), shop_id=self.shop_id, customer_id=customer, **kwargs
        )

    def balance(self, customer: str = "c1") -> int:
        return int(self.member(customer)["balance"])

    def tier(self, customer: str = "c1") -> str:
        return str(self.member(customer)["tier"]["name"])

    def redeem(
        self, points: int, key: str, *, customer: str = "c1", reason: str | None = None
    ) -> dict[str, Any]:
        redemption, _ = loyalty.redeem_points(
            uow=self.uow_factory(),
            shop_id=self.shop_id,
            customer_id=customer,
            points=points,
            idempotency_key=key,
            reason=reason,
        )
        return redemption

    def ledger(self, customer: str = "c1") -> list[tuple[str, int]]:
        page = loyalty.read_ledger(
            uow=self.uow_factory(), shop_id=self.shop_id, customer_id=customer, limit=200
        )
        return [(entry["kind"], entry["points"]) for entry in reversed(page["entries"])]

    def tier_events(self) -> list[dict[str, Any]]:
        with self.engine.connect() as connection:
            payloads = connection.execute(
                select(tables.messaging.outbox.c.payload).order_by(tables.messaging.outbox.c.id)
            ).scalars()
            documents = [json.loads(payload) for payload in payloads]
        return [d for d in documents if d["type"] == "tier_changed"]

    def order(self, order_id: str) -> dict[str, Any]:
        with self.engine.connect() as connection:
            row = (
                connection.execute(
                    select(loyalty_orders).where(
                        loyalty_orders.c.shop_id == self.shop_id, loyalty_orders.c.order_id == order_id
                    )
                )
                .mappings()
                .one()
            )
        return dict(row)

    def settings(self, **changes: Any) -> None:
        document = {**rules_to_document(DEFAULT_RULES), **changes}
        loyalty.update_settings(uow=self.uow_factory(), shop_id=self.shop_id, document=document)


@pytest.fixture
def shop(uow_factory: UowFactory, manual_clock: ManualClock, engine: Engine) -> Shop:
    return Shop(uow_factory, manual_clock, engine)


def problem_of(call: Callable[[], object]) -> Problem:
    with pytest.raises(Problem) as raised:
        call()
    return raised.value


class TestEarning:
    def test_a_purchase_earns_one_point_per_hundred_yen(self, shop: Shop) -> None:
        shop.ingest(shop.purchase("o-1", "4800"))

        assert shop.balance() == 48
        assert shop.ledger() == [("earn", 48)]
        assert shop.order("o-1")["points_earned"] == 48

    def test_points_are_multiplied_by_the_tier_held_when_the_purchase_is_applied(self, shop: Shop) -> None:
        shop.ingest(shop.purchase("o-1", "60000"))  # earned at bronze, then reaches silver
        shop.ingest(shop.purchase("o-2", "4800"))  # silver: 48 × 1.25

        assert shop.ledger() == [("earn", 600), ("earn", 60)]
        assert shop.tier() == "silver"

    def test_an_order_reported_twice_earns_once(self, shop: Shop) -> None:
        shop.ingest(shop.purchase("o-1", "4800"), shop.purchase("o-1", "4800"))
        shop.ingest(shop.purchase("o-1", "4800"))

        assert shop.balance() == 48

    def test_purchases_in_another_currency_earn_nothing(self, shop: Shop) -> None:
        shop.ingest(shop.purchase("o-1", "480000", currency="USD"))

        assert problem_of(shop.member).status == 404  # not even a member yet

    def test_events_other_than_purchases_and_refunds_are_ignored(self, shop: Shop) -> None:
        login = Activity("login_recorded", "c1", shop.clock.now(), {})

        shop.ingest(login)

        assert problem_of(shop.member).status == 404

    def test_the_shops_own_rules_apply(self, shop: Shop) -> None:
        shop.settings(points_per_unit=5, unit_amount="1000")

        shop.ingest(shop.purchase("o-1", "4800"))

        assert shop.balance() == 20

    def test_customers_are_kept_apart_and_so_are_shops(self, shop: Shop, uow_factory: UowFactory) -> None:
        other = Shop(uow_factory, shop.clock, shop.engine, OTHER_SHOP)
        shop.ingest(shop.purchase("o-1", "4800"), shop.purchase("o-2", "1000", customer="c2"))
        other.ingest(other.purchase("o-1", "9900"))

        assert (shop.balance("c1"), shop.balance("c2"), other.balance("c1")) == (48, 10, 99)
        assert problem_of(lambda: other.member("c2")).status == 404


class TestClawback:
    def test_a_full_refund_takes_back_every_point(self, shop: Shop) -> None:
        shop.ingest(shop.purchase("o-1", "4800"))
        shop.ingest(shop.refund("o-1", "4800"))

        assert shop.balance() == 0
        assert shop.ledger() == [("earn", 48), ("clawback", -48)]

    def test_partial_refunds_take_back_their_share(self, shop: Shop) -> None:
        shop.ingest(shop.purchase("o-1", "4800"))
        shop.ingest(shop.refund("o-1", "1200"))
        shop.ingest(shop.refund("o-1", "1200"))

        assert shop.balance() == 24
        assert shop.order("o-1")["points_reversed"] == 24

    def test_a_refund_before_its_purchase_nets_once_both_arrived(self, shop: Shop) -> None:
        later = shop.clock.now()
        earlier = later - timedelta(hours=1)
        shop.ingest(shop.refund("o-1", "2400", at=later))
        assert shop.balance() == 0

        shop.ingest(shop.purchase("o-1", "4800", at=earlier))

        assert shop.balance() == 24
        assert shop.member()["rolling_spend"] == Decimal(2400)

    def test_the_same_result_whatever_order_a_batch_lists_them_in(
        self, shop: Shop, uow_factory: UowFactory
    ) -> None:
        other = Shop(uow_factory, shop.clock, shop.engine, OTHER_SHOP)
        at = shop.clock.now()
        purchase, refund = (
            shop.purchase("o-1", "4800", at=at),
            shop.refund("o-1", "1000", at=at + timedelta(1)),
        )

        shop.ingest(purchase, refund)
        other.ingest(refund, purchase)

        assert shop.balance() == other.balance() == 38

    def test_a_refund_after_its_purchase_in_one_batch(self, shop: Shop) -> None:
        shop.ingest(shop.purchase("o-1", "4800"), shop.refund("o-1", "4800"))

        assert shop.balance() == 0

    def test_clawback_never_takes_the_balance_below_zero(self, shop: Shop) -> None:
        shop.ingest(shop.purchase("o-1", "4800"))
        shop.redeem(40, "spend-it")

        shop.ingest(shop.refund("o-1", "4800"))

        assert shop.balance() == 0
        assert shop.ledger() == [("earn", 48), ("redeem", -40), ("clawback", -8)]
        order = shop.order("o-1")
        assert (order["points_reversed"], order["points_unrecovered"]) == (48, 40)

    def test_clawback_takes_from_the_orders_own_points_first(self, shop: Shop) -> None:
        shop.ingest(shop.purchase("o-1", "4800"))
        shop.clock.advance(timedelta(days=100))
        shop.ingest(shop.purchase("o-2", "1000"))

        shop.ingest(shop.refund("o-2", "1000"))
        shop.clock.advance(timedelta(days=270))  # o-1's points have expired

        assert shop.balance() == 0

    def test_a_refund_of_an_unknown_order_waits_and_takes_nothing(self, shop: Shop) -> None:
        shop.ingest(shop.purchase("o-1", "4800"))
        shop.ingest(shop.refund("o-9", "4800"))

        assert shop.balance() == 48


class TestTiers:
    def test_crossing_a_threshold_emits_tier_changed(self, shop: Shop) -> None:
        shop.ingest(shop.purchase("o-1", "30000"))
        assert shop.tier_events() == []

        shop.ingest(shop.purchase("o-2", "20000"))

        events = shop.tier_events()
        assert [(e["customer_id"], e["data"]) for e in events] == [("c1", {"from": "bronze", "to": "silver"})]
        assert events[0]["shop_id"] == SHOP
        member = shop.member()
        assert member["tier"]["name"] == "silver"
        assert member["next_tier"] == {
            "name": "gold",
            "min_spend": Decimal(150_000),
            "spend_needed": Decimal(100_000),
        }

    def test_one_event_per_batch_however_many_thresholds_it_crosses(self, shop: Shop) -> None:
        shop.ingest(
            shop.purchase("o-1", "100000"), shop.purchase("o-2", "100000"), shop.purchase("o-3", "100000")
        )

        assert [e["data"] for e in shop.tier_events()] == [{"from": "bronze", "to": "platinum"}]
        # 1,000 at bronze, then 1,250 at silver, then 1,500 at gold
        assert shop.ledger() == [("earn", 1000), ("earn", 1250), ("earn", 1500)]

    def test_a_refund_can_lower_the_tier(self, shop: Shop) -> None:
        shop.ingest(shop.purchase("o-1", "160000"))
        shop.ingest(shop.refund("o-1", "20000"))

        assert [e["data"]["to"] for e in shop.tier_events()] == ["gold", "silver"]
        assert shop.tier() == "silver"

    def test_the_tier_falls_as_purchases_leave_the_rolling_window(
        self, shop: Shop, uow_factory: UowFactory
    ) -> None:
        shop.ingest(shop.purchase("o-1", "60000"))
        shop.clock.advance(timedelta(days=200))
        shop.ingest(shop.purchase("o-2", "10000"))

        shop.clock.advance(timedelta(days=170))  # o-1 left the window; o-2 is still in it
        assert loyalty.refresh_tiers(uow=uow_factory()) == 1

        assert [e["data"] for e in shop.tier_events()] == [
            {"from": "bronze", "to": "silver"},
            {"from": "silver", "to": "bronze"},
        ]
        member = shop.member()
        assert member["tier"]["name"] == "bronze"
        assert member["rolling_spend"] == Decimal(10_000)
        assert loyalty.refresh_tiers(uow=uow_factory()) == 0  # evaluated today already

    def test_a_purchase_older_than_the_window_does_not_count(self, shop: Shop) -> None:
        shop.ingest(shop.purchase("o-1", "60000", at=shop.clock.now() - timedelta(days=400)))

        assert shop.tier() == "bronze"
        assert shop.balance() == 0  # and its points had expired already
        assert shop.ledger() == [("earn", 600)]

    def test_a_customer_known_only_by_profile_is_a_bronze_member_with_nothing(
        self, shop: Shop, engine: Engine
    ) -> None:
        now = shop.clock.now()
        with engine.begin() as connection:
            connection.execute(
                insert(tables.customers).values(
                    shop_id=SHOP, customer_id="c1", attributes={}, created_at=now, updated_at=now
                )
            )

        member = shop.member()

        assert (member["balance"], member["tier"]["name"], member["tier"]["since"]) == (0, "bronze", None)
        assert member["next_tier"]["spend_needed"] == Decimal(50_000)


class TestRedemption:
    def test_redeeming_spends_points(self, shop: Shop) -> None:
        shop.ingest(shop.purchase("o-1", "4800"))

        redemption = shop.redeem(30, "r-1", reason="coupon")

        assert (redemption["points"], redemption["balance_after"], redemption["reason"]) == (30, 18, "coupon")
        assert redemption["redemption_id"].startswith("rdm_")
        assert shop.balance() == 18

    def test_repeating_a_request_does_not_redeem_twice(self, shop: Shop, uow_factory: UowFactory) -> None:
        shop.ingest(shop.purchase("o-1", "4800"))
        first = shop.redeem(30, "r-1")

        again, created = loyalty.redeem_points(
            uow=uow_factory(), shop_id=SHOP, customer_id="c1", points=30, idempotency_key="r-1"
        )

        assert (again, created) == (first, False)
        assert shop.balance() == 18

    def test_a_key_reused_for_another_request_is_409(self, shop: Shop) -> None:
        shop.ingest(shop.purchase("o-1", "4800"))
        shop.redeem(30, "r-1")

        problem = problem_of(lambda: shop.redeem(10, "r-1"))

        assert problem.status == 409
        assert shop.balance() == 18

    def test_more_than_the_balance_is_422_naming_points(self, shop: Shop) -> None:
        shop.ingest(shop.purchase("o-1", "4800"))

        problem = problem_of(lambda: shop.redeem(49, "r-1"))

        assert problem.status == 422
        assert problem.errors == [
            {"field": "body.points", "message": "49 points requested but only 48 available"}
        ]
        assert shop.balance() == 48
        assert shop.redeem(48, "r-1")["balance_after"] == 0  # the failed attempt did not burn the key

    def test_the_soonest_expiring_points_go_first(self, shop: Shop) -> None:
        shop.ingest(shop.purchase("o-1", "3000"))
        shop.clock.advance(timedelta(days=100))
        shop.ingest(shop.purchase("o-2", "5000"))
        shop.redeem(40, "r-1")

        shop.clock.advance(timedelta(days=266))  # o-1's lot expires; it was spent first

        assert shop.balance() == 40

    def test_expired_points_cannot_be_redeemed(self, shop: Shop) -> None:
        shop.ingest(shop.purchase("o-1", "4800"))
        shop.clock.advance(timedelta(days=365))

        assert problem_of(lambda: shop.redeem(1, "r-1")).status == 422

    def test_unknown_or_another_shops_customer_is_404(self, shop: Shop, uow_factory: UowFactory) -> None:
        other = Shop(uow_factory, shop.clock, shop.engine, OTHER_SHOP)
        other.ingest(other.purchase("o-1", "4800"))

        assert problem_of(lambda: shop.redeem(1, "r-1")).status == 404
        assert problem_of(lambda: shop.redeem(1, "r-1", customer="nobody")).status == 404


class TestExpiry:
    def test_points_expire_after_365_days_and_show_as_expiring_soon_before(self, shop: Shop) -> None:
        bought = shop.clock.now()
        shop.ingest(shop.purchase("o-1", "4800"))
        shop.clock.advance(timedelta(days=30))
        shop.ingest(shop.purchase("o-2", "1000"))

        shop.clock.advance(timedelta(days=320))
        soon = shop.member()["expiring_soon"]
        assert soon == {
            "within_days": 30,
            "points": 48,
            "lots": [{"expires_at": bought + timedelta(days=365), "points": 48}],
        }
        assert shop.member(expiring_within_days=60)["expiring_soon"]["points"] == 58

        shop.clock.advance(timedelta(days=15))
        assert shop.balance() == 10

    def test_the_expiry_job_writes_explicit_entries_once(self, shop: Shop, uow_factory: UowFactory) -> None:
        shop.ingest(shop.purchase("o-1", "4800"), shop.purchase("o-2", "1000", customer="c2"))
        shop.redeem(8, "r-1")
        shop.clock.advance(timedelta(days=366))

        assert loyalty.expire_points(uow=uow_factory()) == 2
        assert loyalty.expire_points(uow=uow_factory()) == 0

        assert shop.ledger() == [("earn", 48), ("redeem", -8), ("expire", -40)]
        assert shop.ledger("c2") == [("earn", 10), ("expire", -10)]
        assert shop.balance() == 0

    def test_maintenance_runs_both_jobs(self, shop: Shop, uow_factory: UowFactory) -> None:
        shop.ingest(shop.purchase("o-1", "60000"))
        shop.clock.advance(timedelta(days=366))

        loyalty.run_maintenance(uow_factory=uow_factory)

        assert shop.ledger() == [("earn", 600), ("expire", -600)]
        assert shop.tier() == "bronze"


class TestLedgerAndSettings:
    def test_the_ledger_pages_newest_first(self, shop: Shop, uow_factory: UowFactory) -> None:
        shop.ingest(*[shop.purchase(f"o-{n}", f"{(n + 1) * 100}") for n in range(5)])

        pages, before = [], None
        while True:
            page = loyalty.read_ledger(
                uow=uow_factory(), shop_id=SHOP, customer_id="c1", limit=2, before=before
            )
            pages.append([entry["points"] for entry in page["entries"]])
            before = page["next_before"]
            if before is None:
                break

        assert pages == [[5, 4], [3, 2], [1]]

    def test_settings_default_until_saved(self, shop: Shop, uow_factory: UowFactory) -> None:
        settings = loyalty.read_settings(uow=uow_factory(), shop_id=SHOP)
        assert settings["updated_at"] is None
        assert settings["currency"] == "JPY"
        assert settings["tiers"][3] == {"name": "platinum", "min_spend": "300000", "multiplier": "2.0"}

        shop.settings(points_expire_after_days=30)

        saved = loyalty.read_settings(uow=uow_factory(), shop_id=SHOP)
        assert (saved["points_expire_after_days"], saved["updated_at"]) == (30, shop.clock.now())

    def test_settings_that_cannot_work_are_422_naming_the_field(self, shop: Shop) -> None:
        tiers = [
            {"name": "a", "min_spend": "0", "multiplier": "1"},
            {"name": "b", "min_spend": "0", "multiplier": "2"},
        ]

        problem = problem_of(lambda: shop.settings(tiers=tiers))

        assert problem.status == 422
        assert [error["field"] for error in problem.errors or []] == ["body.tiers.1.min_spend"]

    def test_renamed_tiers_are_re_evaluated_at_the_next_purchase(self, shop: Shop) -> None:
        shop.ingest(shop.purchase("o-1", "60000"))
        tiers = [
            {"name": "member", "min_spend": "0", "multiplier": "1"},
            {"name": "vip", "min_spend": "100000", "multiplier": "3"},
        ]
        shop.settings(tiers=tiers)

        shop.ingest(shop.purchase("o-2", "100"))

        assert shop.tier() == "member"
        assert shop.tier_events()[-1]["data"] == {"from": "silver", "to": "member"}


class TestBulk:
    def test_a_thousand_events_take_a_handful_of_statements(self, shop: Shop, engine: Engine) -> None:
        # Seed earlier orders so the batch has refunds to claw back, pending refunds and tier moves.
        shop.ingest(*[shop.purchase(f"old-{n}", "40000", customer=f"c{n}") for n in range(300)])
        batch = [shop.purchase(f"o-{n}", "12000", customer=f"c{n % 400}") for n in range(700)]
        batch += [shop.refund(f"old-{n}", "1000", customer=f"c{n}") for n in range(250)]
        batch += [shop.refund(f"later-{n}", "500", customer=f"c{n}") for n in range(50)]
        statements: list[str] = []

        def count_statement(*args: Any) -> None:
            statements.append(args[2])

        event.listen(engine, "before_cursor_execute", count_statement)
        try:
            shop.ingest(*batch)
        finally:
            event.remove(engine, "before_cursor_execute", count_statement)

        assert len(statements) <= 20, statements
        with engine.connect() as connection:
            rows = connection.execute(select(loyalty_ledger.c.kind, loyalty_ledger.c.points)).all()
            accounts = connection.execute(select(loyalty_accounts.c.customer_id)).scalars().all()
        earned = sum(points for kind, points in rows if kind == "earn")
        clawed = sum(points for kind, points in rows if kind == "clawback")
        # c0..c299: 120 at bronze, then 150 at silver; c300..c399: 120 at bronze.
        assert earned == 300 * 400 + 300 * (120 + 150) + 100 * 120
        assert clawed == -250 * 10  # 1,000 of a 40,000 order that earned 400
        assert len(accounts) == 400
        assert len(shop.tier_events()) == 300  # c0..c299 reach silver
