"""The console's pages: sign-in, overview, customers, settings, playbooks, segments, deliveries, surveys.

Each page reads and changes data only through the services' public APIs (see `gateway.py`), for
the signed-in user's shop. A part whose API is missing or failing renders a "not available" panel.
"""

import asyncio
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from customer_api.entrypoints.console import views
from customer_api.entrypoints.console.gateway import Answer, Gateway
from customer_api.entrypoints.console.plumbing import (
    CSRF_FIELD,
    LOCALE_COOKIE,
    PREFIX,
    SESSION_COOKIE,
    SIGN_IN_CSRF_COOKIE,
    ConsoleRoute,
    Interrupt,
    Page,
    check_csrf,
    clear_session_cookie,
    current_session,
    form_fields,
    is_https,
    locale_of,
    render,
    safe_next,
    set_session_cookie,
)
from customer_api.entrypoints.console.sessions import ABSOLUTE_LIFETIME, SessionStore
from retention_shared.ratelimit import FailureLimiter
from retention_shared.tenancy import KeyDirectory, hash_api_key

STATIC_DIR = Path(__file__).parent / "static"
STATIC_FILES = {"console.css": "text/css", "console.js": "text/javascript"}
SEARCH_LIMIT = 200
SIGN_IN_FAILURES = "10 per 15 minutes"  # per client address
PERIODS = (7, 30, 90, 365)


def whole_days_end() -> datetime:
    """The end of the KPI periods: today's start in UTC. Periods of whole UTC days up to yesterday
    are the ones the segmentation-worker keeps daily snapshots of (seconds to aggregate live
    for a shop with millions of orders); cohort months are UTC months as well."""
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


SCOPES = ("customers:read", "customers:write", "events:write", "admin")
NOTICES = {"followup_cancelled", "key_revoked", "saved"}
# The scheduler's trigger events, offered in the simulation form (it answers 422 for others).
TRIGGER_EVENTS = (
    "purchase_made",
    "refund_issued",
    "login_dropped",
    "ticket_opened",
    "ticket_resolved",
    "segment_changed",
    "churn_risk_changed",
    "tier_changed",
    "survey_answered",
    "customer_birthday",
)


def build_console_router(
    *,
    store: SessionStore,
    directory: KeyDirectory,
    operator_token: str,
    gateway_url: str | None,
) -> APIRouter:
    """The console under /console; its routes stay out of the OpenAPI document (they are HTML)."""
    router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)
    # Guessing a key or the operator token from one address is cut short after a few failures.
    failed_sign_ins = FailureLimiter(SIGN_IN_FAILURES)

    def gateway_for(request: Request) -> Gateway:
        # One client per app: in-process calls go through the app itself, so the console sees
        # exactly what the public API answers, authorisation and tenancy included.
        state = request.app.state
        gateway: Gateway | None = getattr(state, "console_gateway", None)
        if gateway is None:
            gateway = Gateway(app=request.app, base_url=gateway_url, operator_token=operator_token)
            state.console_gateway = gateway
        return gateway

    async def signed_in(request: Request) -> Page:
        """The signed-in user's page context; otherwise off to sign-in, keeping a posted form."""
        session = await current_session(request, store)
        locale = locale_of(request)
        if session is None:
            if request.method == "GET":
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                raise Interrupt(RedirectResponse(f"{PREFIX}/sign-in?{urlencode({'next': target})}", 303))
            fields = await form_fields(request)
            fields.pop(CSRF_FIELD, None)
            if not fields or request.url.path == f"{PREFIX}/sign-out":
                # Nothing typed to keep (a button such as enable, or signing out): just sign in again.
                raise Interrupt(RedirectResponse(f"{PREFIX}/sign-in", 303))
            raise Interrupt(
                sign_in_page(request, status=401, expired=True, resume_path=request.url.path, resume=fields)
            )
        page = Page(
            request=request, session=session, locale=locale, gateway=gateway_for(request), store=store
        )
        if request.method == "POST" and not check_csrf(session, await form_fields(request)):
            raise Interrupt(page.render("error.html", status=403, message=page.t("csrf_failed")))
        return page

    SignedIn = Annotated[Page, Depends(signed_in)]

    def sign_in_page(
        request: Request,
        *,
        status: int = 200,
        errors: dict[str, str] | None = None,
        next_path: str | None = None,
        expired: bool = False,
        resume_path: str | None = None,
        resume: dict[str, str] | None = None,
    ) -> Response:
        csrf = secrets.token_urlsafe(24)
        response = render(
            request,
            "sign_in.html",
            status=status,
            sign_in_csrf=csrf,
            errors=errors or {},
            next_path=safe_next(next_path or request.query_params.get("next")),
            expired=expired,
            resume_path=safe_next(resume_path) if resume_path else "",
            resume=resume or {},
        )
        response.set_cookie(
            SIGN_IN_CSRF_COOKIE, csrf, path=PREFIX, httponly=True, samesite="strict", secure=is_https(request)
        )
        return response

    # --- plumbing pages -------------------------------------------------------------------------

    @router.get("/static/{name}")
    async def static(name: str) -> Response:
        if name not in STATIC_FILES:
            return Response(status_code=404)
        response = FileResponse(STATIC_DIR / name, media_type=STATIC_FILES[name])
        response.headers["Cache-Control"] = "public, max-age=300"
        return response

    @router.get("/sign-in")
    async def sign_in_form(request: Request) -> Response:
        if await current_session(request, store) is not None:
            return RedirectResponse(safe_next(request.query_params.get("next")), 303)
        return sign_in_page(request)

    @router.post("/sign-in")
    async def sign_in(request: Request) -> Response:
        fields = await form_fields(request)
        expected = request.cookies.get(SIGN_IN_CSRF_COOKIE, "")
        submitted = fields.get(CSRF_FIELD, "")
        next_path = safe_next(fields.get("next"))
        resume_path = fields.get("resume_path") or None
        resume = {
            name.removeprefix("resume."): value
            for name, value in fields.items()
            if name.startswith("resume.")
        }
        t = views.translate(locale_of(request))
        if not expected or not secrets.compare_digest(expected.encode(), submitted.encode()):
            return sign_in_page(
                request,
                status=403,
                errors={"credential": t("csrf_failed")},
                next_path=next_path,
                resume_path=resume_path,
                resume=resume,
            )
        address = request.client.host if request.client else "unknown"
        wait_s = failed_sign_ins.retry_after(address)
        if wait_s is not None:
            refused = sign_in_page(
                request,
                status=429,
                errors={"credential": t("too_many_sign_ins", seconds=wait_s)},
                next_path=next_path,
                resume_path=resume_path,
                resume=resume,
            )
            refused.headers["Retry-After"] = str(wait_s)
            return refused
        credential = fields.get("credential", "").strip()
        if not credential:
            return sign_in_page(
                request,
                status=422,
                errors={"credential": t("required")},
                next_path=next_path,
                resume_path=resume_path,
                resume=resume,
            )
        if secrets.compare_digest(credential.encode(), operator_token.encode()):
            token, session = await run_in_threadpool(
                store.create,
                kind="operator",
                shop_id=None,
                key_id=store.operator_key_id,
                scopes=frozenset({"admin"}),
            )
        else:
            principal = await run_in_threadpool(directory.lookup, hash_api_key(credential))
            if principal is None:
                failed_sign_ins.failed(address)
                return sign_in_page(
                    request,
                    status=401,
                    errors={"credential": t("bad_credential")},
                    next_path=next_path,
                    resume_path=resume_path,
                    resume=resume,
                )
            token, session = await run_in_threadpool(
                store.create,
                kind="shop",
                shop_id=principal.shop_id,
                key_id=principal.key_id,
                scopes=principal.scopes,
            )
        if resume_path:
            response: Response = render(
                request,
                "resume.html",
                session=session,
                resume_path=safe_next(resume_path),
                resume=resume,
            )
        elif session.shop_id is None:
            response = RedirectResponse(f"{PREFIX}/shop?{urlencode({'next': next_path})}", 303)
        else:
            response = RedirectResponse(next_path, 303)
        set_session_cookie(response, request, token, int(ABSOLUTE_LIFETIME.total_seconds()))
        response.delete_cookie(SIGN_IN_CSRF_COOKIE, path=PREFIX)
        return response

    @router.post("/sign-out")
    async def sign_out(request: Request, page: SignedIn) -> Response:
        token = request.cookies.get(SESSION_COOKIE, "")
        await run_in_threadpool(store.end, token)
        response = RedirectResponse(f"{PREFIX}/sign-in", 303)
        clear_session_cookie(response, request)
        return response

    @router.get("/language/{locale}")
    async def choose_language(request: Request, locale: str, next: str | None = None) -> Response:
        response = RedirectResponse(safe_next(next), 303)
        if locale in ("en", "ja"):
            response.set_cookie(
                LOCALE_COOKIE,
                locale,
                max_age=365 * 86400,
                path=PREFIX,
                samesite="lax",
                secure=is_https(request),
            )
        return response

    @router.get("/shop")
    async def shop_chooser(page: SignedIn, next: str | None = None) -> Response:
        if not page.session.is_operator:
            return RedirectResponse(f"{PREFIX}/", 303)
        return page.render("shop.html", next_path=safe_next(next), errors={}, shop_value="")

    @router.post("/shop")
    async def switch_shop(request: Request, page: SignedIn) -> Response:
        if not page.session.is_operator:
            raise page.not_found()
        fields = await form_fields(request)
        shop_id = fields.get("shop_id", "").strip()
        next_path = safe_next(fields.get("next"))
        error = None
        if not shop_id:
            error = page.t("required")
        else:
            # Every shop is created with a key, so a shop id without keys is no shop.
            keys = await page.gateway.call("GET", "/v1/api-keys", shop_id=shop_id)
            if keys.unavailable:
                error = page.t("not_available_detail", detail=keys.detail)
            elif not keys.ok or not keys.data.get("keys"):
                error = page.t("unknown_shop")
        if error:
            return page.render(
                "shop.html", status=422, next_path=next_path, errors={"shop_id": error}, shop_value=shop_id
            )
        await run_in_threadpool(store.switch_shop, page.session, shop_id)
        # A customer page of the previous shop would be another shop's: start from the overview.
        return RedirectResponse(next_path if next_path.count("/") <= 2 else f"{PREFIX}/", 303)

    # --- overview ---------------------------------------------------------------------------------

    @router.get("/")
    async def overview(page: SignedIn, days: Annotated[int, Query(ge=1, le=365)] = 30) -> Response:
        page.require("customers:read")
        end = whole_days_end()
        start = end - timedelta(days=days)
        before = start - timedelta(days=days)
        current_kpis, previous_kpis, surveys = await asyncio.gather(
            page.api("GET", "/v1/kpis", params={"from": start.isoformat(), "to": end.isoformat()}),
            page.api("GET", "/v1/kpis", params={"from": before.isoformat(), "to": start.isoformat()}),
            page.api("GET", "/v1/surveys"),
        )
        chosen = views.survey_per_kind(views.items_of(surveys, "surveys"))
        periods = {
            # Survey results are cheap to count live, so their period runs up to now. With no end
            # date given: the survey-service counts days in the shop's timezone, where today may
            # already be tomorrow in UTC (Tokyo from 15:00 UTC).
            "current": {"from": start.date().isoformat()},
            "previous": {
                "from": before.date().isoformat(),
                "to": (start - timedelta(days=1)).date().isoformat(),
            },
        }
        calls = [
            page.api(
                "GET",
                f"/v1/surveys/{quote(survey_id, safe='')}/results",
                params={**periods[period], "interval": "week" if days > 31 else "day"},
            )
            for survey_id in chosen.values()
            for period in ("current", "previous")
        ]
        answers = await asyncio.gather(*calls)
        survey_results = {
            kind: (answers[2 * index], answers[2 * index + 1]) for index, kind in enumerate(chosen)
        }
        cards = views.kpi_cards(current_kpis, previous_kpis, survey_results)
        return page.render(
            "overview.html",
            days=days,
            periods=PERIODS,
            kpis=current_kpis,
            surveys=surveys,
            cards=cards,
            comparison=views.comparison_chart(cards, page.t),
            survey_charts=views.survey_trend_charts(survey_results, page.t),
            cohorts=views.cohort_chart(current_kpis, page.t),
        )

    # --- customers --------------------------------------------------------------------------------

    @router.get("/customers")
    async def customers(
        page: SignedIn,
        q: Annotated[str, Query(max_length=320)] = "",
        cursor: Annotated[str | None, Query(max_length=600)] = None,
    ) -> Response:
        page.require("customers:read")
        query = q.strip()
        if not query:
            answer = await page.api("GET", "/v1/customers", params={"limit": 50, "cursor": cursor})
            rows = answer.data["customers"] if answer.ok else []
            return page.render(
                "customers.html",
                q="",
                answer=answer,
                rows=rows,
                next_cursor=answer.data.get("next_cursor") if answer.ok else None,
            )
        rows, answer = await search_customers(page, query)
        return page.render(
            "customers.html",
            q=query,
            answer=answer,
            rows=rows,
            next_cursor=None,
        )

    @router.get("/customers/{customer_id}")
    async def customer(page: SignedIn, customer_id: str, notice: str | None = None) -> Response:
        page.require("customers:read")
        path = f"/v1/customers/{quote(customer_id, safe='')}"
        profile = await page.api("GET", path)
        if profile.not_found or profile.status == 422:
            raise page.not_found()
        loyalty, scores, followups, activity = await asyncio.gather(
            page.api("GET", f"{path}/loyalty"),
            page.api("GET", f"{path}/scores"),
            page.api("GET", f"{path}/followups"),
            page.api("GET", f"{path}/activity", params={"limit": 100}),
        )
        return page.render(
            "customer.html",
            customer_id=customer_id,
            profile=profile,
            loyalty=loyalty,
            scores=scores,
            followups=followups,
            activity=activity,
            timeline=views.timeline(activity, followups),
            notice=notice if notice in NOTICES else None,
            error=None,
        )

    @router.post("/customers/{customer_id}/followups/{followup_id}/cancel")
    async def cancel_followup(page: SignedIn, customer_id: str, followup_id: str) -> Response:
        page.require("customers:write")
        answer = await page.api("POST", f"/v1/followups/{quote(followup_id, safe='')}/cancel")
        if answer.not_found:
            raise page.not_found()
        if not answer.ok:
            return page.render(
                "error.html",
                status=502 if answer.unavailable else answer.status,
                message=page.t("not_available_detail", detail=answer.detail),
            )
        target = f"{PREFIX}/customers/{quote(customer_id, safe='')}?notice=followup_cancelled"
        return RedirectResponse(target, 303)

    @router.get("/customers/{customer_id}/export")
    async def export(page: SignedIn, customer_id: str) -> Response:
        page.require("customers:read")
        upstream = await page.gateway.download(
            f"/v1/customers/{quote(customer_id, safe='')}/export", shop_id=page.shop_id
        )
        if upstream.status_code == 404:
            raise page.not_found()
        if not upstream.is_success:
            return page.render(
                "error.html", status=502, message=page.t("not_available_detail", detail=upstream.status_code)
            )
        return Response(
            upstream.content,
            media_type="application/json",
            headers={
                "Content-Disposition": upstream.headers.get(
                    "content-disposition", 'attachment; filename="customer.json"'
                )
            },
        )

    @router.get("/customers/{customer_id}/erase")
    async def erase_form(page: SignedIn, customer_id: str) -> Response:
        page.require("customers:write")
        profile = await page.api("GET", f"/v1/customers/{quote(customer_id, safe='')}")
        if not profile.ok:
            raise page.not_found()
        return page.render("erase.html", customer_id=customer_id, errors={}, receipt=None)

    @router.post("/customers/{customer_id}/erase")
    async def erase(request: Request, page: SignedIn, customer_id: str) -> Response:
        page.require("customers:write")
        fields = await form_fields(request)
        if fields.get("confirm", "").strip() != customer_id:
            return page.render(
                "erase.html",
                status=422,
                customer_id=customer_id,
                errors={"confirm": page.t("erase_confirm_mismatch")},
                receipt=None,
            )
        answer = await page.api("DELETE", f"/v1/customers/{quote(customer_id, safe='')}")
        if answer.not_found:
            raise page.not_found()
        if not answer.ok:
            return page.render(
                "error.html", status=502, message=page.t("not_available_detail", detail=answer.detail)
            )
        return page.render("erase.html", customer_id=customer_id, errors={}, receipt=answer.data)

    async def search_customers(page: Page, query: str) -> tuple[list[dict[str, Any]], Answer]:
        """The exact customer id, or customers whose email or name starts with the query."""
        answer = await page.api("GET", "/v1/customers", params={"q": query, "limit": SEARCH_LIMIT})
        return (list(answer.data["customers"]) if answer.ok else []), answer

    # --- settings ---------------------------------------------------------------------------------

    async def settings_page(page: Page, *, status: int = 200, **values: Any) -> Response:
        keys, loyalty, followup_settings, channels, segmentation = await asyncio.gather(
            page.api("GET", "/v1/api-keys"),
            page.api("GET", "/v1/loyalty/settings"),
            page.api("GET", "/v1/followup/settings"),
            page.api("GET", "/v1/channels"),
            page.api("GET", "/v1/segmentation/config"),
        )
        defaults: dict[str, Any] = {
            "new_key": None,
            "key_errors": {},
            "key_form": {},
            "loyalty_errors": {},
            "loyalty_form": None,
            "notice": None,
            "followup_errors": {},
            "followup_form": None,
            "segmentation_errors": {},
            "segmentation_form": None,
            "test_send": None,
        }
        defaults.update(values)
        return page.render(
            "settings.html",
            status=status,
            keys=keys,
            loyalty=loyalty,
            followup_settings=followup_settings,
            channels=channels,
            segmentation=segmentation,
            scopes=SCOPES,
            tiers_text=views.tiers_text(loyalty.data["tiers"]) if loyalty.ok else "",
            **defaults,
        )

    @router.get("/settings")
    async def settings(page: SignedIn, notice: str | None = None) -> Response:
        page.require("admin")
        return await settings_page(page, notice=notice if notice in NOTICES else None)

    @router.post("/settings/api-keys")
    async def create_key(request: Request, page: SignedIn) -> Response:
        page.require("admin")
        fields = await form_fields(request)
        form = await request.form()
        scopes = [scope for scope in form.getlist("scopes") if isinstance(scope, str)]
        answer = await page.api(
            "POST", "/v1/api-keys", json={"name": fields.get("name", ""), "scopes": scopes}
        )
        if not answer.ok:
            return await settings_page(
                page,
                status=422 if answer.status == 422 else 502,
                key_errors=answer.field_errors or {"name": answer.detail},
                key_form={"name": fields.get("name", ""), "scopes": scopes},
            )
        return await settings_page(page, new_key=answer.data)

    async def change_key(page: SignedIn, method: str, path: str, key_id: str) -> Answer | Response:
        """Rotate or revoke a key: the old key's console sessions end with it, and so does this
        page's session when it was signed in with that key. The API's answer, or the page to show."""
        page.require("admin")
        answer = await page.api(method, path)
        if answer.not_found:
            raise page.not_found()
        if not answer.ok:
            return page.render(
                "error.html", status=502, message=page.t("not_available_detail", detail=answer.detail)
            )
        await run_in_threadpool(store.end_sessions_of_key, page.shop_id, key_id)
        if page.session.key_id == key_id:
            return signed_out_response(page.request)
        return answer

    @router.post("/settings/api-keys/{key_id}/rotate")
    async def rotate_key(page: SignedIn, key_id: str) -> Response:
        changed = await change_key(page, "POST", f"/v1/api-keys/{quote(key_id, safe='')}/rotate", key_id)
        if isinstance(changed, Response):
            return changed
        return await settings_page(page, new_key=changed.data)

    @router.post("/settings/api-keys/{key_id}/revoke")
    async def revoke_key(page: SignedIn, key_id: str) -> Response:
        changed = await change_key(page, "DELETE", f"/v1/api-keys/{quote(key_id, safe='')}", key_id)
        if isinstance(changed, Response):
            return changed
        return RedirectResponse(f"{PREFIX}/settings?notice=key_revoked", 303)

    def signed_out_response(request: Request) -> Response:
        response = RedirectResponse(f"{PREFIX}/sign-in", 303)
        clear_session_cookie(response, request)
        return response

    @router.post("/settings/loyalty")
    async def save_loyalty(request: Request, page: SignedIn) -> Response:
        page.require("admin")
        fields = await form_fields(request)
        document, errors = views.loyalty_document(fields, page.t)
        if not errors:
            answer = await page.api("PUT", "/v1/loyalty/settings", json=document)
            if answer.ok:
                return RedirectResponse(f"{PREFIX}/settings?notice=saved#loyalty", 303)
            errors = answer.field_errors or {"body": answer.detail}
        return await settings_page(page, status=422, loyalty_errors=errors, loyalty_form=fields)

    async def save_yaml_setting(request: Request, page: SignedIn, section: str, api_path: str) -> Response:
        """A settings section edited as one YAML document and PUT to its service's API."""
        page.require("admin")
        fields = await form_fields(request)
        document, errors = views.yaml_document(fields.get("document", ""))
        if not errors:
            answer = await page.api("PUT", api_path, json=document)
            if answer.ok:
                return RedirectResponse(f"{PREFIX}/settings?notice=saved#{section}", 303)
            errors = answer.field_errors or {"document": answer.detail}
        extra: dict[str, Any] = {f"{section}_errors": errors, f"{section}_form": fields}
        return await settings_page(page, status=422, **extra)

    @router.post("/settings/channels/{channel}/test")
    async def test_channel(request: Request, page: SignedIn, channel: str) -> Response:
        page.require("admin")
        recipient = (await form_fields(request)).get("to", "").strip()
        if not recipient:
            return await settings_page(
                page, status=422, test_send={"channel": channel, "error": page.t("required"), "to": ""}
            )
        answer = await page.api(
            "POST", f"/v1/channels/{quote(channel, safe='')}/test", json={"to": recipient}
        )
        if answer.not_found:
            raise page.not_found()
        if not answer.ok or not isinstance(answer.data, dict):
            detail = page.t("not_available_detail", detail=answer.detail)
            return await settings_page(
                page, status=422, test_send={"channel": channel, "error": detail, "to": recipient}
            )
        return await settings_page(page, test_send={**answer.data, "to": recipient})

    @router.post("/settings/followup")
    async def save_followup_settings(request: Request, page: SignedIn) -> Response:
        return await save_yaml_setting(request, page, "followup", "/v1/followup/settings")

    @router.post("/settings/segmentation")
    async def save_segmentation_settings(request: Request, page: SignedIn) -> Response:
        return await save_yaml_setting(request, page, "segmentation", "/v1/segmentation/config")

    # --- playbooks --------------------------------------------------------------------------------

    @router.get("/playbooks")
    async def playbooks(page: SignedIn) -> Response:
        page.require("customers:read")
        answer = await page.api("GET", "/v1/playbooks")
        return page.render("playbooks.html", answer=answer, rows=views.items_of(answer, "playbooks"))

    @router.post("/playbooks/{playbook_id}/toggle")
    async def toggle_playbook(request: Request, page: SignedIn, playbook_id: str) -> Response:
        page.require("admin")
        fields = await form_fields(request)
        action = "enable" if fields.get("enabled") == "true" else "disable"
        answer = await page.api("POST", f"/v1/playbooks/{quote(playbook_id, safe='')}/{action}")
        if answer.status in (404, 422) and not answer.unavailable:
            raise page.not_found()
        if not answer.ok:
            return page.render(
                "error.html", status=502, message=page.t("not_available_detail", detail=answer.detail)
            )
        return RedirectResponse(f"{PREFIX}/playbooks", 303)

    async def playbook_page(page: Page, playbook_id: str, *, status: int = 200, **values: Any) -> Response:
        path = f"/v1/playbooks/{quote(playbook_id, safe='')}"
        playbook, results = await asyncio.gather(page.api("GET", path), page.api("GET", f"{path}/results"))
        if playbook.status in (404, 422) and not playbook.unavailable:
            raise page.not_found()
        defaults: dict[str, Any] = {
            "errors": {},
            "yaml_text": None,
            "simulation": None,
            "simulate_form": {},
            "preview": None,
            "preview_form": {},
            "simulation_errors": {},
            "notice": None,
        }
        defaults.update(values)
        if defaults["yaml_text"] is None:
            defaults["yaml_text"] = views.as_yaml(playbook.data.get("document")) if playbook.ok else ""
        return page.render(
            "playbook.html",
            status=status,
            playbook_id=playbook_id,
            playbook=playbook,
            results=results,
            trigger_events=TRIGGER_EVENTS,
            **defaults,
        )

    @router.get("/playbooks/{playbook_id}")
    async def playbook(page: SignedIn, playbook_id: str, notice: str | None = None) -> Response:
        page.require("customers:read")
        return await playbook_page(page, playbook_id, notice=notice if notice in NOTICES else None)

    @router.post("/playbooks/{playbook_id}")
    async def save_playbook(request: Request, page: SignedIn, playbook_id: str) -> Response:
        page.require("admin")
        fields = await form_fields(request)
        text = fields.get("document", "")
        # The scheduler parses and validates the YAML itself and names each failing path.
        answer = await page.api(
            "PUT",
            f"/v1/playbooks/{quote(playbook_id, safe='')}",
            content=text,
            content_type="application/yaml",
        )
        if answer.ok:
            return RedirectResponse(f"{PREFIX}/playbooks/{quote(playbook_id, safe='')}?notice=saved", 303)
        if answer.not_found:
            raise page.not_found()
        errors = answer.field_errors or {"document": answer.detail}
        return await playbook_page(page, playbook_id, status=422, errors=errors, yaml_text=text)

    @router.post("/playbooks/{playbook_id}/simulate")
    async def simulate_playbook(request: Request, page: SignedIn, playbook_id: str) -> Response:
        page.require("customers:read")
        fields = await form_fields(request)
        form = {key: fields.get(key, "").strip() for key in ("customer_id", "event_type", "event_data")}
        data, errors = views.yaml_document(form["event_data"] or "{}")
        if errors or not isinstance(data, dict):
            return await playbook_page(
                page,
                playbook_id,
                status=422,
                simulate_form=form,
                simulation_errors={"event.data": errors.get("document", "a mapping expected")},
            )
        body = {"customer_id": form["customer_id"], "event": {"type": form["event_type"], "data": data}}
        answer = await page.api("POST", f"/v1/playbooks/{quote(playbook_id, safe='')}/simulate", json=body)
        return await playbook_page(
            page,
            playbook_id,
            status=422 if answer.status == 422 else 200,
            simulation=answer,
            simulate_form=form,
            simulation_errors=answer.field_errors if answer.status == 422 else {},
        )

    @router.get("/playbooks/{playbook_id}/preview")
    async def preview_step(
        page: SignedIn,
        playbook_id: str,
        step: Annotated[str, Query(max_length=64)] = "",
        customer_id: Annotated[str, Query(max_length=128)] = "",
    ) -> Response:
        page.require("customers:read")
        answer = await page.api(
            "GET",
            f"/v1/playbooks/{quote(playbook_id, safe='')}/steps/{quote(step, safe='')}/preview",
            params={"customer_id": customer_id},
        )
        return await playbook_page(
            page,
            playbook_id,
            status=200 if answer.ok else 422,
            preview=answer,
            preview_form={"step": step, "customer_id": customer_id},
        )

    # --- segments, deliveries, surveys -------------------------------------------------------------

    @router.get("/segments")
    async def segments(page: SignedIn) -> Response:
        page.require("customers:read")
        end = whole_days_end()
        answer, kpis, moves, clv = await asyncio.gather(
            page.api("GET", "/v1/segments"),
            page.api(
                "GET",
                "/v1/kpis",
                params={"from": (end - timedelta(days=365)).isoformat(), "to": end.isoformat()},
            ),
            page.api("GET", "/v1/segments/moves"),
            page.api("GET", "/v1/segments/clv-distribution"),
        )
        return page.render(
            "segments.html",
            answer=answer,
            kpis=kpis,
            moves=moves,
            clv=clv,
            charts=views.segment_charts(answer, page.t),
            cohorts=views.cohort_chart(kpis, page.t),
            moves_chart=views.segment_moves_chart(moves, page.t),
            clv_chart=views.clv_histogram(clv, page.t),
        )

    @router.get("/segments/{name}")
    async def segment(
        page: SignedIn,
        name: str,
        sort: Annotated[str, Query(pattern="^(clv|churn_risk)$")] = "clv",
        cursor: Annotated[str | None, Query(max_length=400)] = None,
    ) -> Response:
        page.require("customers:read")
        answer = await page.api(
            "GET",
            f"/v1/segments/{quote(name, safe='')}/customers",
            params={"sort": sort, "cursor": cursor, "limit": 100},
        )
        if answer.status in (404, 422) and not answer.unavailable:
            raise page.not_found()
        return page.render(
            "segment.html", name=name, sort=sort, answer=answer, rows=views.items_of(answer, "items")
        )

    @router.get("/deliveries")
    async def deliveries(page: SignedIn, replayed: int | None = None, topic: str | None = None) -> Response:
        page.require("customers:read")
        summary, failures = await asyncio.gather(
            page.api("GET", "/v1/deliveries/summary"),
            page.api("GET", "/v1/deliveries", params={"status": "failed"}),
        )
        dead_letters = await page.api("GET", "/v1/dlq") if page.session.is_operator else None
        return page.render(
            "deliveries.html",
            summary=summary,
            failures=failures,
            dead_letters=dead_letters,
            charts=views.delivery_charts(summary, page.t),
            failure_rows=views.items_of(failures, "deliveries"),
            replayed=replayed if page.session.is_operator else None,
            replayed_topic=topic,
        )

    @router.post("/deliveries/dlq/{topic}/replay")
    async def replay_dead_letters(page: SignedIn, topic: str) -> Response:
        # Dead letters hold every shop's events: the operator's alone, as the API demands.
        if not page.session.is_operator:
            raise page.not_found()
        answer = await page.api("POST", f"/v1/dlq/{quote(topic, safe='')}/replay")
        if answer.not_found:
            raise page.not_found()
        if not answer.ok or not isinstance(answer.data, dict):
            return page.render(
                "error.html",
                status=502 if answer.unavailable else answer.status,
                message=page.t("not_available_detail", detail=answer.detail),
            )
        query = urlencode({"replayed": int(answer.data.get("replayed", 0)), "topic": topic})
        return RedirectResponse(f"{PREFIX}/deliveries?{query}", 303)

    @router.get("/surveys")
    async def surveys(
        page: SignedIn,
        max_score: Annotated[str, Query(pattern="^([0-9]|10)?$")] = "",
        days: Annotated[int, Query(ge=1, le=365)] = 90,
    ) -> Response:
        page.require("customers:read")
        surveys_answer = await page.api("GET", "/v1/surveys")
        listed = [s for s in views.items_of(surveys_answer, "surveys") if not s.get("archived")][:6]
        today = datetime.now(UTC).date()
        # Up to now: no end date (see the overview's survey periods for why).
        window = {"from": (today - timedelta(days=days)).isoformat()}
        interval = "week" if days > 31 else "day"
        results = await asyncio.gather(
            *(
                page.api(
                    "GET",
                    f"/v1/surveys/{quote(str(s.get('survey_id')), safe='')}/results",
                    params={**window, "interval": interval},
                )
                for s in listed
            )
        )
        comments = await asyncio.gather(
            *(
                page.api(
                    "GET",
                    f"/v1/surveys/{quote(str(s.get('survey_id')), safe='')}/comments",
                    params={**window, "max_score": max_score, "limit": 50},
                )
                for s in listed
            )
        )
        return page.render(
            "surveys.html",
            surveys=surveys_answer,
            sections=views.survey_sections(listed, results, comments, page.t),
            max_score=int(max_score) if max_score else None,
            days=days,
            periods=PERIODS,
        )

    return router
