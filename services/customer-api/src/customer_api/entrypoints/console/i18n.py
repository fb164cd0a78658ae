"""The console's words in English and Japanese, and choosing between them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

LOCALES = ("en", "ja")
DEFAULT_LOCALE = "en"

# key: (English, Japanese). Templates call t("key"); placeholders use str.format names.
MESSAGES: dict[str, tuple[str, str]] = {
    "app_name": ("Retention console", "Retention コンソール"),
    "skip_to_content": ("Skip to content", "本文へ移動"),
    "nav_overview": ("Overview", "概要"),
    "nav_segments": ("Segments", "セグメント"),
    "nav_customers": ("Customers", "顧客"),
    "nav_playbooks": ("Playbooks", "プレイブック"),
    "nav_deliveries": ("Deliveries", "配信"),
    "nav_surveys": ("Surveys", "アンケート"),
    "nav_settings": ("Settings", "設定"),
    "language": ("Language", "言語"),
    "sign_in": ("Sign in", "サインイン"),
    "sign_out": ("Sign out", "サインアウト"),
    "sign_in_title": ("Sign in to the Retention console", "Retention コンソールにサインイン"),
    "sign_in_as": ("Sign in as", "サインインの種類"),
    "shop_staff": ("Shop staff (API key)", "ショップスタッフ（API キー）"),
    "operator": ("Operator (operator token)", "運用者（運用トークン）"),
    "credential": ("API key or operator token", "API キーまたは運用トークン"),
    "credential_help": (
        "Shop staff use one of the shop's API keys; the key itself is never stored.",
        "ショップスタッフはショップの API キーを使います。キー自体は保存されません。",
    ),
    "bad_credential": ("This key is unknown or revoked.", "このキーは存在しないか、失効しています。"),
    "bad_operator_token": ("This is not the operator token.", "運用トークンが正しくありません。"),
    "required": ("Required.", "必須です。"),
    "session_expired": (
        "Your session has expired. Sign in again; what you entered is kept.",
        "セッションの有効期限が切れました。もう一度サインインしてください。入力内容は保持されています。",
    ),
    "resume_title": ("Submit your entries again", "入力内容をもう一度送信"),
    "resume_help": (
        "You were signed out before this form was sent. Check the entries below and send them again.",
        "フォームの送信前にサインアウトされていました。内容を確認して、もう一度送信してください。",
    ),
    "submit_again": ("Send again", "もう一度送信"),
    "signed_in_as_shop": ("Shop", "ショップ"),
    "operator_badge": ("Operator", "運用者"),
    "switch_shop": ("Act for shop", "対象ショップ"),
    "switch": ("Switch", "切り替え"),
    "shop_id": ("Shop id", "ショップ ID"),
    "unknown_shop": ("No shop has this id.", "この ID のショップはありません。"),
    "choose_shop": (
        "Choose the shop to act for. The operator sees one shop at a time.",
        "操作するショップを選んでください。運用者は一度に一つのショップだけを見ます。",
    ),
    "not_available": ("Not available", "利用できません"),
    "not_available_detail": (
        "This part of the platform is not available right now ({detail}). The rest of the page works.",
        "この機能は現在利用できません（{detail}）。ページの他の部分は使えます。",
    ),
    "forbidden": (
        "Your key lacks the '{scope}' scope for this.",
        "このキーには '{scope}' スコープがありません。",
    ),
    "not_found": ("Not found.", "見つかりません。"),
    "csrf_failed": (
        "The form was out of date. Reload the page and try again.",
        "フォームが古くなっています。ページを再読み込みしてもう一度お試しください。",
    ),
    "error_title": ("Something went wrong", "エラーが発生しました"),
    # overview
    "period": ("Period", "期間"),
    "last_n_days": ("Last {n} days", "直近 {n} 日"),
    "whole_days_note": (
        "Purchase figures: whole days up to yesterday (UTC). Survey scores include today.",
        "購買の指標は昨日（UTC）までの丸一日単位、アンケートの指標は今日までです。",
    ),
    "show": ("Show", "表示"),
    "kpi": ("KPI", "KPI"),
    "current": ("This period", "今期"),
    "previous": ("Previous period", "前期"),
    "change": ("Change", "増減"),
    "target": ("Target", "目標"),
    "on_target": ("On target", "目標達成"),
    "off_target": ("Below target", "目標未達"),
    "no_target": ("No target", "目標なし"),
    "kpi_active_customers": ("Active customers", "アクティブ顧客数"),
    "kpi_retention_rate": ("Retention rate", "継続率"),
    "kpi_churn_rate": ("Churn rate", "離反率"),
    "kpi_repeat_purchase_rate": ("Repeat-purchase rate", "リピート購入率"),
    "kpi_arpu": ("ARPU", "ARPU（顧客平均売上）"),
    "kpi_average_clv": ("Average CLV", "平均 CLV"),
    "kpi_nps": ("NPS", "NPS"),
    "kpi_csat": ("CSAT", "CSAT"),
    "kpi_ces": ("CES", "CES"),
    "kpi_returning_revenue": ("Revenue from returning customers", "リピーター売上"),
    "kpi_trend": ("Trend", "推移"),
    "satisfaction": ("Satisfaction", "満足度"),
    # customers
    "search": ("Search", "検索"),
    "search_label": ("Customer id, email or name", "顧客 ID・メール・氏名"),
    "search_scope": (
        "The exact id, or the start of an email or a name, in any case (up to {n} customers shown).",
        "ID の完全一致、またはメールアドレス・氏名の前方一致で検索します"
        "（大文字小文字は区別せず、最大 {n} 人を表示）。",
    ),
    "no_customers": ("No customers found.", "顧客が見つかりません。"),
    "test_send": ("Send a test", "テスト送信"),
    "test_send_to": ("Test {channel} to", "{channel} のテスト送信先"),
    "test_send_ok": (
        "The provider accepted the test message to {to}.",
        "{to} へのテスト送信を受け付けました。",
    ),
    "test_send_failed": ("The test failed: {error}", "テスト送信に失敗しました：{error}"),
    "too_many_sign_ins": (
        "Too many failed sign-ins from this address. Try again in {seconds} seconds.",
        "このアドレスからのサインイン失敗が多すぎます。{seconds} 秒後にもう一度お試しください。",
    ),
    "customer_id": ("Customer id", "顧客 ID"),
    "email": ("Email", "メール"),
    "name": ("Name", "氏名"),
    "phone": ("Phone", "電話"),
    "locale": ("Locale", "言語"),
    "updated": ("Updated", "更新"),
    "next_page": ("Next page", "次のページ"),
    "profile": ("Profile", "プロフィール"),
    "consent": ("Consent", "同意"),
    "granted": ("granted", "同意あり"),
    "withdrawn": ("withdrawn", "同意なし"),
    "loyalty": ("Loyalty", "ロイヤルティ"),
    "points": ("Points", "ポイント"),
    "tier": ("Tier", "ランク"),
    "next_tier": ("Next tier", "次のランク"),
    "spend_needed": ("spend needed", "必要な購入額"),
    "insights": ("RFM, segment, churn risk, CLV", "RFM・セグメント・離反リスク・CLV"),
    "segment": ("Segment", "セグメント"),
    "rfm": ("RFM", "RFM"),
    "churn_risk": ("Churn risk", "離反リスク"),
    "clv": ("CLV", "CLV"),
    "net_spend": ("Net spend", "純購入額"),
    "purchases": ("Purchases", "購入回数"),
    "timeline": ("Timeline", "タイムライン"),
    "timeline_empty": ("Nothing has happened yet.", "まだ履歴がありません。"),
    "when": ("When", "日時"),
    "what": ("What", "内容"),
    "status": ("Status", "状態"),
    "reason": ("Reason", "理由"),
    "cancel_followup": ("Cancel", "取り消す"),
    "followup_cancelled": ("The follow-up was cancelled.", "フォローアップを取り消しました。"),
    "dead_letters_waiting": ("{n} waiting", "未処理 {n} 件"),
    "dead_letters_replayed": (
        "{n} dead letters of {topic} were published again.",
        "{topic} の処理できなかったメッセージ {n} 件を再送しました。",
    ),
    "actions": ("Actions", "操作"),
    "export_data": ("Export data (JSON)", "データをエクスポート（JSON）"),
    "erase_customer": ("Erase this customer", "この顧客を消去"),
    "erase_title": ("Erase customer {id}", "顧客 {id} を消去"),
    "erase_warning": (
        "This removes the customer's personal data in every service. It cannot be undone.",
        "この顧客の個人データをすべてのサービスから削除します。元に戻せません。",
    ),
    "erase_confirm_label": ("Type the customer id to confirm", "確認のため顧客 ID を入力してください"),
    "erase_confirm_mismatch": ("This is not the customer's id.", "顧客 ID が一致しません。"),
    "erase_done": (
        "The customer was erased. Receipt {id}: {status}.",
        "顧客を消去しました。受付番号 {id}：{status}。",
    ),
    "kind_purchase_made": ("Purchase", "購入"),
    "kind_refund_issued": ("Refund", "返金"),
    "kind_login_recorded": ("Sign-in", "ログイン"),
    "kind_ticket_opened": ("Ticket opened", "問い合わせ受付"),
    "kind_ticket_resolved": ("Ticket resolved", "問い合わせ解決"),
    "kind_followup_sent": ("Follow-up sent", "フォローアップ送信"),
    "kind_followup": ("Follow-up", "フォローアップ"),
    "kind_survey_answered": ("Survey answer", "アンケート回答"),
    # settings
    "api_keys": ("API keys", "API キー"),
    "key_name": ("Name", "名前"),
    "prefix": ("Prefix", "プレフィックス"),
    "scopes": ("Scopes", "スコープ"),
    "created": ("Created", "作成日時"),
    "revoked": ("Revoked", "失効"),
    "active": ("Active", "有効"),
    "create_key": ("Create key", "キーを作成"),
    "rotate": ("Rotate", "ローテーション"),
    "revoke": ("Revoke", "失効させる"),
    "new_key_once": (
        "The new key is shown only this once. Copy it now:",
        "新しいキーは今回しか表示されません。今すぐコピーしてください：",
    ),
    "key_revoked": ("The key was revoked.", "キーを失効させました。"),
    "loyalty_rules": ("Loyalty rules and tiers", "ロイヤルティのルールとランク"),
    "points_per_unit": ("Points per unit", "単位あたりのポイント"),
    "unit_amount": ("Unit amount (currency)", "単位金額（通貨）"),
    "points_expire_after_days": ("Points expire after (days)", "ポイント有効期限（日）"),
    "tier_window_days": ("Tier window (days)", "ランク判定期間（日）"),
    "tiers": (
        "Tiers: one per line, 'name min_spend multiplier'",
        "ランク：1 行に 1 つ「名前 最低購入額 倍率」",
    ),
    "save": ("Save", "保存"),
    "saved": ("Saved.", "保存しました。"),
    "followup_settings": (
        "Quiet hours, frequency budget, holdout",
        "配信停止時間帯・頻度上限・ホールドアウト",
    ),
    "channels": ("Channels", "チャネル"),
    "platform_default": ("platform default", "プラットフォーム既定"),
    "segment_definitions": ("Segment definitions", "セグメント定義"),
    "followup_yaml": ("Follow-up settings as YAML", "フォローアップ設定（YAML）"),
    "segmentation_yaml": ("Segmentation settings as YAML", "セグメンテーション設定（YAML）"),
    "playbook_yaml": ("Playbook as YAML", "プレイブック（YAML）"),
    # playbooks
    "playbook": ("Playbook", "プレイブック"),
    "enabled": ("Enabled", "有効"),
    "disabled": ("Disabled", "無効"),
    "enable": ("Enable", "有効にする"),
    "disable": ("Disable", "無効にする"),
    "edit": ("Edit", "編集"),
    "edit_yaml": ("Edit as YAML", "YAML で編集"),
    "trigger": ("Trigger", "トリガー"),
    "steps": ("Steps", "ステップ"),
    "delay": ("Delay", "遅延"),
    "channel": ("Channel", "チャネル"),
    "preview": ("Preview", "プレビュー"),
    "simulate": ("Simulate", "シミュレーション"),
    "simulation": ("Simulation", "シミュレーション"),
    "event_type": ("Event type", "イベント種別"),
    "results": ("Results", "結果"),
    "treated": ("Treated", "施策群"),
    "holdout": ("Holdout", "ホールドアウト"),
    "conversion": ("Conversion", "コンバージョン"),
    "uplift": ("Uplift", "アップリフト"),
    "ci95": ("95% CI", "95% 信頼区間"),
    "no_playbooks": ("No playbooks yet.", "プレイブックはまだありません。"),
    # segments
    "size": ("Customers", "顧客数"),
    "revenue_share": ("Revenue share", "売上シェア"),
    "transitions": ("Moves between segments", "セグメント間の移動"),
    "clv_distribution": ("CLV distribution", "CLV 分布"),
    "first_segment": ("(first segment)", "（初回）"),
    "moves_note": (
        "Moves in the last 90 days: rows are the segment left, columns the segment entered.",
        "直近 90 日の移動：行が移動元、列が移動先のセグメントです。",
    ),
    "cohorts": ("Monthly cohort retention", "月次コホート継続率"),
    "clv_by_segment": ("Average CLV by segment", "セグメント別平均 CLV"),
    "not_provided": (
        "Not provided by the platform's APIs yet.",
        "プラットフォームの API はまだこの値を提供していません。",
    ),
    "preview_for": ("Preview a step for a customer", "顧客を指定してステップをプレビュー"),
    "step": ("Step", "ステップ"),
    "event_data": ("Event data (YAML)", "イベントデータ（YAML）"),
    "starts": ("Would start", "開始する"),
    "outcome": ("Outcome", "結果"),
    "version": ("Version", "バージョン"),
    "control": ("Control", "対照群"),
    "runs": ("Runs", "実行数"),
    "converted": ("Converted", "コンバージョン数"),
    "responses": ("Responses", "回答数"),
    "response_rate": ("Response rate", "回答率"),
    "p_alive": ("P(active)", "アクティブ確率"),
    "sort_by": ("Sort by", "並び順"),
    # deliveries
    "by_channel": ("By channel and status", "チャネル別・状態別"),
    "failures": ("Failures", "失敗"),
    "dead_letters": ("Dead-letter queue", "デッドレターキュー"),
    "replay": ("Replay", "再送"),
    "operator_only": ("Operator only.", "運用者のみ。"),
    # surveys
    "trends": ("Trends", "推移"),
    "by_touchpoint": ("By touchpoint", "タッチポイント別"),
    "by_segment": ("By segment", "セグメント別"),
    "comments": ("Comments", "コメント"),
    "score": ("Score", "スコア"),
    "detractor": ("Detractor", "批判者"),
    "filter": ("Filter", "絞り込み"),
    "max_score": ("Score at most", "スコア上限"),
    "any": ("Any", "すべて"),
    "none": ("—", "—"),
}


def negotiate(accept_language: str | None) -> str:
    """The best of our locales for an Accept-Language header (by q-value, then order)."""
    best, best_q = DEFAULT_LOCALE, -1.0
    for position, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        language = tag.strip().lower().split("-")[0]
        if language not in LOCALES:
            continue
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                q = 0.0
        # Earlier entries win ties, as the header lists preferences in order.
        score = q - position * 1e-6
        if score > best_q:
            best, best_q = language, score
    return best


def translator(locale: str) -> Callable[..., str]:
    index = LOCALES.index(locale) if locale in LOCALES else 0

    def t(key: str, **values: Any) -> str:
        texts = MESSAGES.get(key)
        text = texts[index] if texts else key
        return text.format(**values) if values else text

    return t
