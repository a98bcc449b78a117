"""``POST /v1/query``: the query engine over HTTP (a Vizzly-style query API), called with a data token.

``Authorization: Bearer <data token>`` (a data token, never an API key) and a body ``{dataset, columns, filters,
order, limit}``. The token is verified exactly as ``bulletin query`` verifies it and ``tasks.warehouse.run_query`` runs
the query, so the token's secure filters are ANDed with the body's filters and everything else the engine refuses
is refused here too: a bad token is 401, a column, field or operator outside the dataset's allowlist 400, a dataset
the token does not grant (or a required secure filter it lacks) 403, an unknown dataset 404.

Rows stream out as JSON (``{"dataset", "columns", "rows": [{...}], "row_count", "truncated"}``) or, with
``Accept: text/csv``, as CSV (text cells that would run as spreadsheet formulas neutralised, and a last
``# truncated: ...`` row when the limit cut the result, as in report files). ``limit`` is at most
``BULLETIN_API_QUERY_MAX_ROWS``, which also applies when none is given. The first batch is read before the answer
starts, so the errors a query can meet are still answered with their status; a warehouse failure after that ends
the stream early (the body is then visibly incomplete: no closing JSON, no final CSV row).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as time_of_day
from decimal import Decimal
from typing import Any, Literal, TypeVar

import pyarrow as pa
from fastapi import APIRouter, Depends, Request, Security
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from bulletin.datasets import DatasetSpec, load_datasets
from bulletin.edge.api.auth import request_now
from bulletin.edge.api.openapi import error_responses
from bulletin.errors import (
    ConfigError,
    DefinitionError,
    NotAcceptableError,
    QueryError,
    TokenError,
    TransientError,
    UnauthorizedError,
)
from bulletin.models import QuerySpec
from bulletin.settings import Settings
from tasks.render.csv import truncation_note
from tasks.render.sanitize import neutralize_formula
from tasks.tokens import KeySet, TokenClaims, load_keyset, verify_token
from tasks.warehouse import StreamResult, Warehouse, run_query

logger = logging.getLogger(__name__)
router = APIRouter(tags=["query"])

CHALLENGE = 'Bearer realm="bulletin-query"'
#: Keys rotate (``bulletin keys generate``/``retire``) while the API runs: the keyset is read again this often.
KEYSET_TTL_SECONDS = 30.0
UNAVAILABLE = "the query engine is not available; the server log has the details"
Format = Literal["json", "csv"]
_T = TypeVar("_T")
_MEDIA: dict[str, tuple[Format, ...]] = {
    "application/json": ("json",),
    "application/*": ("json",),
    "text/csv": ("csv",),
    "text/*": ("csv",),
    "*/*": ("json", "csv"),
}


class QueryResult(BaseModel):
    """The JSON answer (documentation: the body is streamed in this shape)."""

    dataset: str
    columns: list[str]
    rows: list[dict[str, Any]]
    row_count: int
    truncated: bool


@dataclass
class QueryEngine:
    """What the route needs, kept for the app's life: the warehouse (opened on first use), the dataset registry
    and the keyset (see ``keyset``). Server-side problems (no keyset, no warehouse, a
    broken dataset file) are logged in full and answered 503 without the detail (paths stay on the server)."""

    settings: Settings
    clock: Callable[[], float] = time.monotonic
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _warehouse: Warehouse | None = None
    _registry: dict[str, DatasetSpec] | None = None
    _keyset: tuple[float, tuple[int, int, int] | None, KeySet] | None = None

    def keyset(self) -> KeySet:
        """The keyset, read again when the keys file changed (``bulletin keys retire`` takes effect at the next
        request, not up to a TTL later) or, kept in a setting or a Secret block, every ``KEYSET_TTL_SECONDS``.
        Each key's ``not_after`` is checked against the request's clock when a token is verified."""
        with self._lock:
            version = self._keys_file_version()
            cached = self._keyset
            if cached is None or cached[1] != version or self.clock() - cached[0] > KEYSET_TTL_SECONDS:
                cached = (self.clock(), version, _server_side(lambda: load_keyset(self.settings)))
                self._keyset = cached
            return cached[2]

    def _keys_file_version(self) -> tuple[int, int, int] | None:
        """The keys file's identity (a rewrite replaces it: new inode), or None when the keyset is not a file's."""
        if self.settings.signing_keys is not None or self.settings.signing_keys_block:
            return None
        try:
            stat = self.settings.keyset_path.stat()
        except OSError:
            return None
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def registry(self) -> dict[str, DatasetSpec]:
        with self._lock:
            if self._registry is None:
                self._registry = _server_side(lambda: load_datasets(self.settings.datasets_dir))
            return self._registry

    def warehouse(self) -> Warehouse:
        with self._lock:
            if self._warehouse is None:
                self._warehouse = _server_side(lambda: Warehouse(self.settings.warehouse))
            return self._warehouse

    def verify(self, token: str, now: datetime) -> TokenClaims:
        keyset = self.keyset()
        try:
            return verify_token(
                token, keyset, issuer=self.settings.token_issuer, audience=self.settings.token_audience, now=now
            )
        except TokenError as exc:
            raise UnauthorizedError(exc.message, challenge=f'{CHALLENGE}, error="invalid_token"') from exc

    def run(self, claims: TokenClaims, spec: QuerySpec) -> StreamResult:
        try:
            return run_query(claims, spec, self.registry(), self.warehouse(), batch_rows=self.settings.query_batch_rows)
        except ConfigError as exc:  # e.g. the warehouse lacks a table the dataset names: not the caller's fault
            logger.error("query on dataset %s failed on the server side: %s", spec.dataset, exc)
            raise TransientError(UNAVAILABLE) from exc

    def close(self) -> None:
        with self._lock:
            if self._warehouse is not None:
                self._warehouse.close()
                self._warehouse = None


def _server_side(load: Callable[[], _T]) -> _T:
    try:
        return load()
    except (ConfigError, DefinitionError) as exc:
        logger.error("the query engine cannot start: %s", exc)
        raise TransientError(UNAVAILABLE) from exc


#: The data token as the OpenAPI document declares it; ``data_token`` does the checking.
DATA_TOKEN = HTTPBearer(
    scheme_name="DataToken",
    bearerFormat="JWT",
    description="A data token (ES256 JWT from `bulletin token mint`), never an API key: `Authorization: Bearer "
    "<data token>`.",
    auto_error=False,
)


def data_token(request: Request, _declared: object = Security(DATA_TOKEN)) -> str:
    """The data token from ``Authorization: Bearer``; 401 with a challenge when there is none."""
    values = request.headers.getlist("authorization")
    if len(values) > 1:
        raise UnauthorizedError("give one Authorization header", challenge=CHALLENGE)
    scheme, _, token = (values[0] if values else "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError("a data token is required: 'Authorization: Bearer <data token>'", challenge=CHALLENGE)
    return token.strip()


def choose_format(accept: str | None) -> Format:
    """JSON unless ``Accept`` prefers ``text/csv``; 406 when it accepts neither (q=0 refuses a type)."""
    if not accept or not accept.strip():
        return "json"
    best: dict[Format, float] = {"json": 0.0, "csv": 0.0}
    for part in accept.split(","):
        media, *params = (p.strip().lower() for p in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    quality = max(0.0, min(1.0, float(value)))
                except ValueError:
                    quality = 0.0
        matches = _MEDIA.get(media, ())
        for kind in matches:
            best[kind] = max(best[kind], quality)
    if best["json"] == best["csv"] == 0.0:
        raise NotAcceptableError("this route answers application/json or text/csv", field="accept")
    return "csv" if best["csv"] > best["json"] else "json"


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime | date | time_of_day):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


def _json_chunks(
    dataset: str, names: list[str], batches: Iterator[pa.RecordBatch], result: StreamResult
) -> Iterator[bytes]:
    head = json.dumps({"dataset": dataset, "columns": names})
    yield (head[:-1] + ',"rows":[').encode("utf-8")
    first = True
    for batch in batches:
        rows = [json.dumps({k: _json_value(v) for k, v in row.items()}, allow_nan=False) for row in batch.to_pylist()]
        chunk = ",".join(rows)
        yield (chunk if first else "," + chunk).encode("utf-8")
        first = False
    yield f'],"row_count":{result.rows},"truncated":{json.dumps(result.truncated)}}}'.encode()


def _csv_line(values: list[Any]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(values)
    return out.getvalue()


def _csv_chunks(names: list[str], batches: Iterator[pa.RecordBatch], result: StreamResult) -> Iterator[bytes]:
    yield _csv_line([neutralize_formula(n) for n in names]).encode("utf-8")
    for batch in batches:
        lines = (
            _csv_line([neutralize_formula(v) if isinstance(v, str) else v for v in (row[n] for n in names)])
            for row in batch.to_pylist()
        )
        yield "".join(lines).encode("utf-8")
    if result.truncated:
        yield _csv_line([truncation_note(result.rows)] + [""] * (len(names) - 1)).encode("utf-8")


def _started(result: StreamResult) -> Iterator[pa.RecordBatch]:
    """The batches with the first one already read (so its errors are still an error answer), then the rest."""
    batches = iter(result)
    first = next(batches, None)

    def chained() -> Iterator[pa.RecordBatch]:
        if first is not None:
            yield first
        yield from batches

    return chained()


def _prepare(engine: QueryEngine, token: str, spec: QuerySpec, fmt: Format, now: datetime) -> Iterator[bytes]:
    claims = engine.verify(token, now)
    result = engine.run(claims, spec)
    try:
        batches = _started(result)
    except BaseException:
        result.close()
        raise
    names = result.schema.names
    return _csv_chunks(names, batches, result) if fmt == "csv" else _json_chunks(spec.dataset, names, batches, result)


@router.post(
    "/v1/query",
    summary="Query a dataset with a data token",
    response_model=QueryResult,
    responses={
        200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "The rows, JSON or CSV"},
        **error_responses(401, 403, 404, 406, 503),
    },
)
async def query(request: Request, spec: QuerySpec, token: str = Depends(data_token)) -> StreamingResponse:
    """The rows of ``dataset`` that the data token may see and the body asks for (see the module docstring)."""
    engine: QueryEngine = request.app.state.query_engine
    cap = engine.settings.api_query_max_rows
    if spec.limit is not None and spec.limit > cap:
        raise QueryError(f"limit is at most {cap}", field="limit")
    fmt = choose_format(request.headers.get("accept"))
    spec = spec.model_copy(update={"limit": spec.limit or cap})
    chunks = await run_in_threadpool(_prepare, engine, token, spec, fmt, request_now(request))
    media = "text/csv; charset=utf-8" if fmt == "csv" else "application/json"
    return StreamingResponse(chunks, media_type=media, headers={"cache-control": "no-store"})
