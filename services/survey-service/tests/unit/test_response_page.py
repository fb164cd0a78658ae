"""The response page over plain HTTP: no JavaScript, one tap, the comment, thanks, and friendly errors."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from survey_service.adapters import tables

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def post_form(survey_api: Any, token: str, fields: dict[str, str]) -> Any:
    return survey_api.client.post(f"/s/{token}", data=fields)


class TestAnsweringWithoutJavaScript:
    def test_one_tap_then_the_comment_then_thanks(self, survey_api: Any) -> None:
        shop_id, headers = survey_api.register_shop("Kissa <Tokyo> & Co", locale="en")
        token = survey_api.invite(headers)["token"]

        page = survey_api.client.get(f"/s/{token}")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        html = page.text
        assert '<html lang="en">' in html
        assert "Kissa &lt;Tokyo&gt; &amp; Co" in html and "<Tokyo>" not in html
        assert "How likely are you to recommend Kissa &lt;Tokyo&gt; &amp; Co" in html
        assert "<script" not in html
        assert "<fieldset" in html and "<legend>" in html
        assert re.findall(r'<button type="submit" name="score" value="(\d+)"', html) == [
            str(n) for n in range(11)
        ]
        assert page.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert page.headers["referrer-policy"] == "no-referrer"

        tapped = post_form(survey_api, token, {"step": "score", "score": "4"})
        assert tapped.status_code == 303 and tapped.headers["location"] == f"/s/{token}"
        assert survey_api.count(tables.responses) == 1
        follow = survey_api.client.get(f"/s/{token}").text
        assert 'id="score-4" name="score" value="4" checked' in follow
        assert (
            '<label class="comment" for="comment">What is the main reason for your score?</label>' in follow
        )

        sent = post_form(
            survey_api, token, {"step": "comment", "score": "4", "comment": "<script>alert(1)</script> slow"}
        )
        assert sent.status_code == 303 and sent.headers["location"] == f"/s/{token}/thanks"
        thanks = survey_api.client.get(f"/s/{token}/thanks")
        assert thanks.status_code == 200 and "Thank you for your answer" in thanks.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt; slow" in thanks.text
        assert "<script>alert" not in thanks.text
        # The edit page shows the comment escaped in its text box, too.
        again = survey_api.client.get(f"/s/{token}").text
        assert "&lt;script&gt;alert(1)&lt;/script&gt; slow</textarea>" in again
        assert [e["data"]["score"] for e in survey_api.published("survey_answered")] == [4]

    def test_the_page_speaks_the_customers_language(self, survey_api: Any, shop: Any) -> None:
        shop_id, headers = shop  # a Japanese shop
        survey_api.deliver("customer_upserted", shop_id, "emma", {"created": True, "locale": "en-GB"})
        english = survey_api.invite(headers, customer_id="emma")["token"]
        japanese = survey_api.invite(headers, customer_id="aiko")["token"]
        assert '<html lang="en">' in survey_api.client.get(f"/s/{english}").text
        page = survey_api.client.get(f"/s/{japanese}").text
        assert '<html lang="ja">' in page and "Kissa Tokyoを友人や知人に薦める" in page
        told = survey_api.invite(headers, customer_id="ken", locale="en")["token"]
        assert '<html lang="en">' in survey_api.client.get(f"/s/{told}").text

    def test_a_bad_score_or_a_long_comment_shows_the_form_again_with_the_error(
        self, survey_api: Any, shop: Any
    ) -> None:
        _, headers = shop
        token = survey_api.invite(headers, survey="csat")["token"]
        bad = post_form(survey_api, token, {"step": "score", "score": "9"})
        assert bad.status_code == 422 and 'role="alert"' in bad.text and "1から5までの数字" in bad.text
        post_form(survey_api, token, {"step": "score", "score": "5"})
        long_comment = "あ" * 2001
        refused = post_form(survey_api, token, {"step": "comment", "score": "5", "comment": long_comment})
        assert refused.status_code == 422 and "2000文字以内" in refused.text
        assert long_comment in refused.text  # what was typed is not lost

    def test_the_link_takes_changes_for_24_hours_then_says_it_was_answered(
        self, survey_api: Any, shop: Any
    ) -> None:
        _, headers = shop
        token = survey_api.invite(headers)["token"]
        post_form(survey_api, token, {"step": "score", "score": "10"})
        survey_api.clock.advance(timedelta(hours=24, seconds=1))
        used = survey_api.client.get(f"/s/{token}")
        assert used.status_code == 409 and "回答済み" in used.text
        assert post_form(survey_api, token, {"step": "score", "score": "1"}).status_code == 409


class TestFriendlyErrorPages:
    def test_expired_links(self, survey_api: Any, shop: Any) -> None:
        _, headers = shop
        token = survey_api.invite(headers)["token"]
        survey_api.clock.advance(timedelta(days=31))
        page = survey_api.client.get(f"/s/{token}")
        assert page.status_code == 410 and "有効期限が切れています" in page.text
        assert "Kissa Tokyo" in page.text
        assert post_form(survey_api, token, {"score": "5"}).status_code == 410

    def test_forged_links_reveal_no_shop(self, survey_api: Any, shop: Any) -> None:
        _, headers = shop
        token = survey_api.invite(headers)["token"]
        forged = token[:10] + ("x" if token[10] != "x" else "y") + token[11:]
        for candidate in (forged, "garbage", "a" * 300):
            page = survey_api.client.get(f"/s/{candidate}", headers={"Accept-Language": "en-US,en;q=0.8"})
            assert page.status_code == 404
            assert "This link does not work" in page.text and "Kissa" not in page.text
            assert page.headers["x-frame-options"] == "DENY"
        assert post_form(survey_api, forged, {"score": "5"}).status_code == 404
