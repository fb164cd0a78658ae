"""Plain domain logic: signed tokens, scales and detractors, and the metrics."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from survey_service.domain.metrics import ces, csat, nps
from survey_service.domain.surveys import SCALES, Kind, clean_comment, is_detractor, normalise_locale
from survey_service.domain.tokens import InvitationSigner, TokenState

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class TestTokens:
    def test_a_token_round_trips_until_it_expires(self) -> None:
        signer = InvitationSigner("secret-1")
        token_id = signer.new_token_id()
        token = signer.sign(token_id, NOW + timedelta(days=30))
        checked = signer.check(token, NOW)
        assert checked.state is TokenState.VALID and checked.token_id == token_id
        assert signer.check(token, NOW + timedelta(days=30)).state is TokenState.EXPIRED

    def test_any_change_or_another_secret_makes_it_invalid(self) -> None:
        signer = InvitationSigner("secret-1")
        token = signer.sign(signer.new_token_id(), NOW + timedelta(days=30))
        assert InvitationSigner("secret-2").check(token, NOW).state is TokenState.INVALID
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        for position in range(len(token)):
            replacement = alphabet[(alphabet.index(token[position]) + 1) % len(alphabet)]
            altered = token[:position] + replacement + token[position + 1 :]
            assert signer.check(altered, NOW).state is TokenState.INVALID, position
        for junk in ("", "x", token + "A", token + "=", "!" + token, "é" * 44):
            assert signer.check(junk, NOW).state is TokenState.INVALID

    def test_an_expired_token_that_was_tampered_with_is_invalid_not_expired(self) -> None:
        signer = InvitationSigner("secret-1")
        token = signer.sign(signer.new_token_id(), NOW - timedelta(days=1))
        assert signer.check(token, NOW).state is TokenState.EXPIRED
        assert signer.check(token[:-1] + ("A" if token[-1] != "A" else "B"), NOW).state is TokenState.INVALID


class TestScales:
    @pytest.mark.parametrize(
        ("kind", "detractors"),
        [(Kind.NPS, set(range(0, 7))), (Kind.CSAT, {1, 2}), (Kind.CES, {5, 6, 7})],
    )
    def test_detractors(self, kind: Kind, detractors: set[int]) -> None:
        assert {score for score in SCALES[kind].points if is_detractor(kind, score)} == detractors

    def test_scale_membership_refuses_non_integers(self) -> None:
        assert 10 in SCALES[Kind.NPS] and 11 not in SCALES[Kind.NPS]
        assert True not in SCALES[Kind.CSAT] and "3" not in SCALES[Kind.CSAT] and 2.0 not in SCALES[Kind.CES]

    def test_locales_and_comments(self) -> None:
        assert normalise_locale("ja-JP") == "ja" and normalise_locale("en_GB") == "en"
        assert normalise_locale("fr") is None and normalise_locale(None) is None
        assert clean_comment("  hi\x00 there\r\n ") == "hi there"
        assert clean_comment("   ") is None


class TestMetrics:
    def test_nps_and_its_interval(self) -> None:
        figures = nps({10: 50, 8: 30, 3: 20})
        assert figures["nps"] == 30.0
        margin = 1.959963984540054 * math.sqrt((0.5 + 0.2 - 0.09) / 100)
        assert figures["confidence_interval"]["low"] == round(100 * (0.3 - margin), 1)
        assert figures["confidence_interval"]["high"] == round(100 * (0.3 + margin), 1)

    def test_the_interval_stays_within_plus_minus_100(self) -> None:
        assert nps({10: 3})["confidence_interval"] == {"level": 0.95, "low": 100.0, "high": 100.0}
        assert nps({9: 1, 0: 1})["confidence_interval"]["low"] >= -100.0

    def test_csat_and_ces(self) -> None:
        assert csat({5: 1, 4: 2, 1: 1}) == {"csat": 75.0, "satisfied": 3, "mean": 3.5}
        assert ces({1: 1, 2: 1, 7: 2}) == {"mean": 4.25, "easy": 2, "easy_pct": 50.0}
        assert nps({})["nps"] is None and csat({})["mean"] is None


class TestIds:
    def test_ids_drawn_together_look_like_single_ones_and_differ(self) -> None:
        from survey_service.service_layer.surveys import new_id, new_ids

        ids = new_ids("rsp", 500)
        assert len(set(ids)) == 500
        assert {len(i) for i in ids} == {len(new_id("rsp"))}
        assert all(i.startswith("rsp_") and int(i[4:], 16) >= 0 for i in ids)
