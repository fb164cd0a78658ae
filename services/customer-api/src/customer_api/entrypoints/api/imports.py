"""`POST /v1/imports`: a shop's history uploaded as CSV or JSON Lines, imported like `retention import`.

The body is streamed to a temporary file (constant memory, any size up to the limit), checked as a
whole, then written in chunks. An invalid file answers 422 listing the lines, and nothing is
written. Resuming is uploading the same file again: what was committed comes back as duplicates.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request, status
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from customer_api.domain.history_import import (
    FIELDS,
    OPTIONS,
    ColumnMapping,
    Format,
    ImportRejected,
    MappingError,
)
from customer_api.service_layer.history_import import FileSource, import_file
from customer_api.service_layer.uow import CustomerApiUnitOfWork
from retention_shared.logs import correlation_id
from retention_shared.problems import Problem
from retention_shared.tenancy import Principal
from retention_shared.web import Authenticator, require_scope

MAX_UPLOAD_BYTES = 2 * 1024**3
MAPPING_HEADER = "X-Import-Mapping"
CONTENT_TYPES: dict[str, Format] = {
    "text/csv": "csv",
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
}


class ImportResult(BaseModel):
    rows: int = Field(description="Data records read (lines after the header, blank lines aside)")
    events: int = Field(description="Events they make: one purchase per order, one refund per refund line")
    purchases: int
    refunds: int
    imported: int = Field(description="Events new to the platform, stored and published now")
    duplicates: int = Field(description="Events it had already (an earlier import of the same orders)")
    recent: int = Field(description="Purchases under two days old: these start follow-ups like new orders")
    first_at: datetime | None
    last_at: datetime | None
    sha256: str = Field(description="Of the uploaded body")


def build_import_router(
    *,
    uow_factory: Callable[[], CustomerApiUnitOfWork],
    authenticate: Authenticator,
    max_bytes: int = MAX_UPLOAD_BYTES,
    spool_dir: Path | None = None,
) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["imports"])
    can_write_events = require_scope(authenticate, "events:write")
    clock = uow_factory().clock

    @router.post(
        "/imports",
        response_model=ImportResult,
        status_code=status.HTTP_200_OK,
        responses={
            413: {"description": f"Body over {max_bytes:,} bytes"},
            415: {"description": "Not text/csv or application/x-ndjson"},
            422: {"description": "Invalid mapping, or invalid lines (listed; nothing was written)"},
        },
        openapi_extra={
            "parameters": [
                {
                    "name": name,
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "Column holding this field" if name in FIELDS else "Import option",
                }
                for name in FIELDS + OPTIONS
            ]
            + [
                {
                    "name": MAPPING_HEADER,
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": 'The mapping as one JSON object, e.g. {"customer_id": "Customer ID"}',
                }
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "text/csv": {"schema": {"type": "string"}},
                    "application/x-ndjson": {"schema": {"type": "string"}},
                },
            },
        },
    )
    async def post_import(request: Request, principal: Principal = Depends(can_write_events)) -> ImportResult:
        """Import past orders as purchase and refund events, streamed as CSV (with a header line) or
        JSON Lines. Map the file's columns with query parameters (`?customer_id=Customer%20ID`) or
        the `X-Import-Mapping` JSON header; fields not mapped are read from columns of their own
        name. The whole file is checked before anything is written: one invalid line and the answer
        is 422, listing the first invalid lines, with nothing written. Importing the same orders
        again adds nothing (they come back as duplicates), so an interrupted upload is resumed by
        sending the file again."""
        file_format, encoding = _content_type(request.headers.get("content-type", ""))
        mapping = _mapping(request)
        descriptor, name = tempfile.mkstemp(
            prefix="retention-import-", suffix=f".{file_format}", dir=spool_dir
        )
        path = Path(name)
        try:
            digest = hashlib.sha256()
            size = 0
            with os.fdopen(descriptor, "wb") as spool:
                async for part in request.stream():
                    size += len(part)
                    if size > max_bytes:
                        raise Problem(
                            413,
                            "Content Too Large",
                            f"An import may carry at most {max_bytes:,} bytes; split the file or use "
                            "`retention import`",
                        )
                    digest.update(part)
                    spool.write(part)
            try:
                source = FileSource(path, file_format, encoding)
            except ValueError as exc:
                raise _invalid("charset", str(exc)) from None
            source.sha256 = digest.hexdigest()
            try:
                summary = await run_in_threadpool(
                    import_file,
                    uow_factory=uow_factory,
                    shop_id=principal.shop_id,
                    source=source,
                    mapping=mapping,
                    now=clock.now(),
                    correlation_id=correlation_id.get(),
                )
            except ImportRejected as rejected:
                raise _rejection(rejected) from None
        finally:
            path.unlink(missing_ok=True)
        return ImportResult(
            rows=summary.rows,
            events=summary.events,
            purchases=summary.purchases,
            refunds=summary.refunds,
            imported=summary.imported,
            duplicates=summary.duplicates,
            recent=summary.recent,
            first_at=summary.first_at,
            last_at=summary.last_at,
            sha256=source.sha256,
        )

    return router


def _content_type(header: str) -> tuple[Format, str]:
    media_type, *parameters = (part.strip() for part in header.split(";"))
    file_format = CONTENT_TYPES.get(media_type.lower())
    if file_format is None:
        raise Problem(
            415,
            "Unsupported Media Type",
            f"Send text/csv or application/x-ndjson, not {media_type or 'no Content-Type'!r}",
        )
    charset = "utf-8"
    for parameter in parameters:
        key, _, value = parameter.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"')
    encoding = "utf-8-sig" if charset.lower().replace("_", "-") in ("utf-8", "utf8") else charset
    return file_format, encoding


def _mapping(request: Request) -> ColumnMapping:
    options: dict[str, Any] = {}
    header = request.headers.get(MAPPING_HEADER)
    if header:
        try:
            document = json.loads(header)
        except json.JSONDecodeError as exc:
            raise _invalid(MAPPING_HEADER, f"not JSON: {exc.msg}") from None
        if not isinstance(document, dict):
            raise _invalid(MAPPING_HEADER, "expected a JSON object of fields and options")
        options.update(document)
    for key, value in request.query_params.items():
        if key not in FIELDS and key not in OPTIONS:
            raise _invalid(key, f"unknown query parameter; expected one of {', '.join(FIELDS + OPTIONS)}")
        options[key] = value
    try:
        return ColumnMapping.from_options(options)
    except MappingError as exc:
        field_name, _, message = str(exc).partition(": ")
        raise _invalid(field_name if message else "mapping", message or str(exc)) from None


def _invalid(field_name: str, message: str) -> Problem:
    return Problem(422, "Unprocessable Content", message, errors=[{"field": field_name, "message": message}])


def _rejection(rejected: ImportRejected) -> Problem:
    more = f" (the first {len(rejected.errors)} are listed)" if rejected.total > len(rejected.errors) else ""
    return Problem(
        422,
        "Unprocessable Content",
        f"The file was not imported, nothing was written: {rejected.total} problem(s){more}",
        errors=[
            {
                "line": error.line,
                "field": error.field,
                "column": error.column,
                "message": error.message,
                "detail": str(error),
            }
            for error in rejected.errors
        ],
    )
