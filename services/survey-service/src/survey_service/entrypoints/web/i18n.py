"""The response page's own words, in Japanese and English (the survey's questions come from the survey)."""

from __future__ import annotations

from survey_service.domain.surveys import Kind

STRINGS: dict[str, dict[str, str]] = {
    "ja": {
        "title": "アンケート",
        "from_shop": "{shop}からのアンケート",
        "from_us": "アンケートのお願い",
        "tap_hint": "数字をひとつ選んでください。選ぶとすぐに回答が送信されます。",
        "your_score": "あなたの評価",
        "change_score": "評価を変更する場合は選び直してください。",
        "comment_hint": "任意・{max}文字まで",
        "send": "送信する",
        "skip": "コメントなしで終える",
        "thanks_title": "ご回答ありがとうございました",
        "thanks_body": "いただいたご意見は、サービスの改善に役立てます。",
        "thanks_edit": "{until}まで回答を変更できます。",
        "edit_link": "回答を変更する",
        "your_comment": "あなたのコメント",
        "expired_title": "このリンクは有効期限が切れています",
        "expired_body": "アンケートの回答期間は終了しました。ご協力ありがとうございました。",
        "used_title": "このアンケートには回答済みです",
        "used_body": "ご回答ありがとうございました。回答はすでに受け付けています。",
        "invalid_title": "このリンクは使用できません",
        "invalid_body": (
            "リンクが正しくないか、無効になっています。メールに記載のリンクをそのまま開いてください。"
        ),
        "error_score": "{low}から{high}までの数字を選んでください。",
        "error_comment": "コメントは{max}文字以内でご入力ください。",
        "error_title": "入力内容を確認してください",
        "too_large_title": "送信内容が大きすぎます",
    },
    "en": {
        "title": "Survey",
        "from_shop": "A short survey from {shop}",
        "from_us": "A short survey",
        "tap_hint": "Choose one number. Your answer is sent as soon as you choose.",
        "your_score": "Your score",
        "change_score": "Choose again to change your score.",
        "comment_hint": "Optional, up to {max} characters",
        "send": "Send",
        "skip": "Finish without a comment",
        "thanks_title": "Thank you for your answer",
        "thanks_body": "We read every answer and use it to improve.",
        "thanks_edit": "You can change your answer until {until}.",
        "edit_link": "Change my answer",
        "your_comment": "Your comment",
        "expired_title": "This link has expired",
        "expired_body": "This survey has closed. Thank you all the same.",
        "used_title": "You have already answered this survey",
        "used_body": "Thank you: we have your answer.",
        "invalid_title": "This link does not work",
        "invalid_body": (
            "The link is wrong or no longer valid. Please open the link exactly as it is in the message."
        ),
        "error_score": "Choose a number from {low} to {high}.",
        "error_comment": "Please keep your comment to {max} characters.",
        "error_title": "Please check your answer",
        "too_large_title": "What you sent is too large",
    },
}

# The words at both ends of each scale.
ANCHORS: dict[Kind, dict[str, tuple[str, str]]] = {
    Kind.NPS: {"ja": ("まったく思わない", "非常にそう思う"), "en": ("Not at all likely", "Extremely likely")},
    Kind.CSAT: {"ja": ("とても不満", "とても満足"), "en": ("Very dissatisfied", "Very satisfied")},
    Kind.CES: {"ja": ("とても簡単", "とても大変"), "en": ("Very easy", "Very difficult")},
}


# Stands in for `{shop}` in a question when the shop's name is not known yet.
SHOP_FALLBACK = {"ja": "当店", "en": "us"}


def words(locale: str) -> dict[str, str]:
    return STRINGS.get(locale, STRINGS["ja"])
