"""HTTP plumbing shared by every service: problem+json errors, health, metrics, correlation ids, auth."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from retention_shared.logs import correlation_id, new_correlation_id
from retention_shared.metrics import REQUEST_LATENCY
from retention_shared.problems import Problem
from retention_shared.ratelimit import KeyRateLimiter
from retention_shared.tenancy import KeyDirectory, Principal, hash_api_key

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
ReadinessCheck = Callable[[], None]
# A FastAPI dependency giving the caller's principal.
Authenticator = Callable[..., Coroutine[Any, Any, Principal]]


@dataclass
class ServiceApi:
    """What a service contributes to an HTTP app: its routers, its readiness checks (is a
    dependency reachable?) and its liveness checks (is the process still doing its work? A failing
    one asks the orchestrator for a restart, so it must be cheap and never depend on I/O)."""

    name: str
    routers: list[APIRouter]
    readiness: dict[str, ReadinessCheck] = field(default_factory=dict)
    liveness: dict[str, ReadinessCheck] = field(default_factory=dict)


class FieldError(BaseModel):
    field: str = Field(description="Dotted path of the failing field, e.g. body.events.3.data.amount")
    message: str


class ProblemDocument(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None


def _problem_content(description: str) -> dict[str, Any]:
    schema = ProblemDocument.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    schema["properties"]["errors"] = {
        "anyOf": [{"type": "array", "items": FieldError.model_json_schema()}, {"type": "null"}]
    }
    return {"description": description, "content": {PROBLEM_JSON: {"schema": schema}}}


# Every route documents the errors it can answer, as application/problem+json.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _problem_content("Bad request, e.g. an invalid cursor"),
    401: _problem_content("Missing or unknown API key"),
    403: _problem_content("The key lacks the scope"),
    404: _problem_content("Not found, or another shop's"),
    409: _problem_content("Conflicts with the current state"),
    413: _problem_content("Body too large"),
    415: _problem_content("Unsupported content type"),
    422: _problem_content("Validation failed; `errors` names each field"),
    429: _problem_content("Over the key's rate limit; see Retry-After"),
}


def problem_response(problem: Problem, request: Request) -> JSONResponse:
    return JSONResponse(
        problem.body(instance=request.url.path),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=problem.headers,
    )


def _field_path(location: Iterable[Any]) -> str:
    parts = [str(part) for part in location]
    return ".".join(parts)


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for error in exc.errors():
            message = error.get("msg", "invalid")
            if error.get("type") == "json_invalid":
                message = f"malformed JSON: {error.get('ctx', {}).get('error', message)}"
            errors.append({"field": _field_path(error.get("loc", ())), "message": message})
        problem = Problem(422, "Unprocessable Content", "The request did not validate", errors=errors)
        return problem_response(problem, request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        titles = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed"}
        problem = Problem(
            exc.status_code,
            titles.get(exc.status_code, "Error"),
            str(exc.detail) if exc.detail else None,
            headers=dict(exc.headers) if exc.headers else None,
        )
        return problem_response(problem, request)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(
            Problem(500, "Internal Server Error", "An unexpected error occurred"), request
        )


class ObservabilityMiddleware:
    """Correlation ids and the request-latency histogram, as plain ASGI.

    `@app.middleware("http")` would wrap every request in Starlette's BaseHTTPMiddleware, which
    runs the app in an extra task behind memory streams: a measurable share of a small GET.
    """

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = Headers(scope=scope).get("x-correlation-id")
        request_id = incoming[:128] if incoming else new_correlation_id()
        token = correlation_id.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Correlation-ID"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            template = getattr(scope.get("route"), "path", "unmatched")
            REQUEST_LATENCY.labels(self.service, scope["method"], template, str(status)).observe(
                time.perf_counter() - started
            )
            correlation_id.reset(token)


def install_observability(app: FastAPI, service: str) -> None:
    app.add_middleware(ObservabilityMiddleware, service=service)


def create_app(title: str, service: str, apis: list[ServiceApi], *, version: str = "0.1.0") -> FastAPI:
    """One FastAPI app for one service, or for all of them in the embedded mode."""
    app = FastAPI(
        title=title,
        version=version,
        description="Retention platform API. Errors are RFC 9457 application/problem+json.",
    )
    install_problem_handlers(app)
    install_observability(app, service)
    for api in apis:
        for router in api.routers:
            app.include_router(router, responses=PROBLEM_RESPONSES)
    checks = {f"{api.name}:{name}": check for api in apis for name, check in api.readiness.items()}
    alive = {f"{api.name}:{name}": check for api in apis for name, check in api.liveness.items()}
    app.include_router(health_router(checks, alive))
    return app


def health_router(
    checks: dict[str, ReadinessCheck], liveness: dict[str, ReadinessCheck] | None = None
) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="Liveness: the process is serving and its background loops run")
    def healthz() -> JSONResponse:
        return _run_checks(liveness or {}, ("ok", "failing"))

    @router.get("/readyz", summary="Readiness: the database and the broker are reachable")
    def readyz() -> JSONResponse:
        return _run_checks(checks, ("ready", "unready"), list_empty=True)

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


def _run_checks(
    checks: dict[str, ReadinessCheck], words: tuple[str, str], *, list_empty: bool = False
) -> JSONResponse:
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            check()
            results[name] = "ok"
        except Exception as exc:
            results[name] = f"failing: {exc}"[:300]
    healthy = all(result == "ok" for result in results.values())
    body: dict[str, object] = {"status": words[0] if healthy else words[1]}
    if checks or list_empty:
        body["checks"] = results
    return JSONResponse(body, 200 if healthy else 503)


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem(
            401,
            "Unauthorized",
            "Send 'Authorization: Bearer <api key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return token.strip()


OPERATOR_SHOP_HEADER = "X-Retention-Shop"
OPERATOR_KEY_ID = "operator"


def principal_dependency(
    directory_of: Callable[[Request], KeyDirectory],
    limiter: KeyRateLimiter | None = None,
    *,
    operator_token: str | None = None,
) -> Authenticator:
    """A FastAPI dependency that authenticates the shop's API key and applies its rate limit.

    With `operator_token`, the platform operator (and the platform's own services, such as the
    scheduler inviting to a survey or the console acting for its signed-in user) may act for one
    shop by sending that token with an `X-Retention-Shop` header. The header is the only way the
    operator's requests get a shop, so they stay confined to it like any shop key.
    """

    # async, so that a key answered from the directory's memory costs no thread-pool hop; only
    # a lookup that needs the database goes to a worker thread.
    async def authenticate(request: Request) -> Principal:
        token = _bearer(request)
        if operator_token is not None and secrets.compare_digest(token.encode(), operator_token.encode()):
            shop_id = request.headers.get(OPERATOR_SHOP_HEADER, "").strip()
            if not shop_id:
                raise Problem(
                    400,
                    "Bad Request",
                    "The operator token acts for one shop: "
                    f"send its id in the '{OPERATOR_SHOP_HEADER}' header",
                )
            operator = Principal(shop_id, OPERATOR_KEY_ID, frozenset({"admin"}))
            request.state.principal = operator
            return operator
        directory, key_hash = directory_of(request), hash_api_key(token)
        known, principal = directory.remembered(key_hash)
        if not known:
            principal = await run_in_threadpool(directory.lookup, key_hash)
        if principal is None:
            raise Problem(
                401, "Unauthorized", "Unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"}
            )
        if limiter is not None:
            wait_s = limiter.retry_after(principal.key_id)
            if wait_s is not None:
                raise Problem(
                    429,
                    "Too Many Requests",
                    f"This API key is over its rate limit; retry in {wait_s} s",
                    headers={"Retry-After": str(wait_s)},
                )
        request.state.principal = principal
        return principal

    return authenticate


def require_scope(authenticate: Authenticator, scope: str) -> Authenticator:
    # async: a plain check need not hop to the thread pool, as a sync dependency would.
    async def check(principal: Principal = Depends(authenticate)) -> Principal:
        if not principal.allows(scope):
            raise Problem(403, "Forbidden", f"This API key lacks the '{scope}' scope")
        return principal

    return check


def bearer_token(request: Request) -> str:
    return _bearer(request)
