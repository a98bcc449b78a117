"""One webhook delivery attempt, and the retry policy around it.

Pure policy first (``retry_delays``, ``next_attempt_delay``, ``parse_retry_after``, ``classify``), then the one I/O
function, ``send_attempt``: SSRF check, a transport pinned to the checked address, one POST that never follows a
redirect, at most 4 KB of the answer read. It returns an ``AttemptResult`` for every HTTP or network outcome and
raises only for a programming or configuration error; the caller records each result and schedules the next try.

Logging: nothing here logs. httpx logs every request's full URL at INFO (webhook URLs can carry secrets in their
path or query), so importing this module raises the ``httpx`` logger to WARNING unless it was set higher already.
"""

from __future__ import annotations

import logging
import math
import random
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal

import httpx

from bulletin.clock import require_aware
from bulletin.errors import ConfigError, TransientError, UnsafeTargetError
from tasks.webhooks.signing import dbt_signature
from tasks.webhooks.ssrf import Resolver, check_url, default_resolve, pinned_transport

MAX_ATTEMPTS = 30
MAX_DELAY_SECONDS = 7 * 86_400
MAX_TIMEOUT_SECONDS = 30.0
MAX_RESPONSE_BYTES = 4_096
USER_AGENT = "Bulletin-Webhooks/1"
Outcome = Literal["success", "retry", "gone", "failed"]

_httpx_logger = logging.getLogger("httpx")
if _httpx_logger.level < logging.WARNING:  # NOTSET (0) included: it would inherit the root's INFO
    _httpx_logger.setLevel(logging.WARNING)

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")
#: Set by the transport from the request itself; a caller's value would contradict it.
_RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


# --- Retry policy (pure) ---


def retry_delays(schedule: Sequence[float]) -> list[float]:
    """The schedule as floats, or ``ConfigError``: 1-30 finite, non-negative delays of at most 7 days."""
    if isinstance(schedule, str) or not 1 <= len(schedule) <= MAX_ATTEMPTS:
        raise ConfigError(f"webhook retry schedule must list 1-{MAX_ATTEMPTS} delays")
    delays = []
    for value in schedule:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError("webhook retry delays must be numbers of seconds")
        delay = float(value)
        if not math.isfinite(delay) or not 0 <= delay <= MAX_DELAY_SECONDS:
            raise ConfigError(f"webhook retry delays must be 0-{MAX_DELAY_SECONDS} seconds")
        delays.append(delay)
    return delays


def next_attempt_delay(attempt_number: int, schedule: Sequence[float], rng: random.Random) -> float | None:
    """Seconds to wait before attempt ``attempt_number`` (1-based), or ``None`` when the schedule is exhausted.

    Full jitter (AWS "Exponential Backoff And Jitter"): uniform in ``[0, schedule[attempt_number - 1]]``, so
    receivers recovering from an outage are not hit by every sender at once. Attempt 1 uses ``schedule[0]``
    (usually 0: now). After a 429/503, wait ``max(this, result.retry_after)``.
    """
    delays = retry_delays(schedule)
    if isinstance(attempt_number, bool) or not isinstance(attempt_number, int) or attempt_number < 1:
        raise ConfigError("attempt numbers start at 1")
    if attempt_number > len(delays):
        return None
    return rng.uniform(0.0, delays[attempt_number - 1])


def parse_retry_after(value: str | None, *, now: datetime, max_seconds: float = 3600) -> float | None:
    """A ``Retry-After`` value (delay-seconds or HTTP-date) as seconds clamped to ``[0, max_seconds]``.

    ``None`` when absent or unreadable: a malformed header is ignored, not trusted.
    """
    require_aware(now)
    if not math.isfinite(max_seconds) or max_seconds < 0:
        raise ConfigError("the Retry-After cap must be a non-negative number of seconds")
    text = (value or "").strip()
    if not text or len(text) > 64:
        return None
    if text.isascii() and text.isdigit():  # isdigit alone also accepts "²", which int() refuses
        seconds = float(int(text))
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000" means UTC without saying so
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    return min(max(seconds, 0.0), float(max_seconds))


@dataclass(frozen=True)
class AttemptResult:
    """What one attempt did, ready to be stored beside the message (the body is truncated and never a secret)."""

    status_code: int | None
    duration_ms: int
    response_body: str
    error: str | None
    outcome: Outcome
    retry_after: float | None


def classify(status_code: int) -> Outcome:
    """2xx success; 410 gone (disable the endpoint); everything else, redirects included, is retried."""
    if 200 <= status_code < 300:
        return "success"
    if status_code == 410:
        return "gone"
    return "retry"


# --- One attempt (I/O) ---


def _checked_headers(headers: Mapping[str, str]) -> httpx.Headers:
    out = httpx.Headers({"user-agent": USER_AGENT, "accept-encoding": "identity"})
    for name, value in headers.items():
        # Refused here, by name only: h11 would refuse them too, but with the value (maybe a signature) in its text.
        if not _HEADER_NAME.fullmatch(name) or name.lower() in _RESERVED_HEADERS:
            raise ConfigError(f"webhook header {name[:40]!r} is not allowed")
        if not isinstance(value, str) or not _HEADER_VALUE.fullmatch(value):
            raise ConfigError(f"webhook header {name!r} has a value with control or non-ASCII characters")
        out[name] = value
    out["content-type"] = "application/json"
    out["user-agent"] = USER_AGENT
    return out


def _error_text(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    if isinstance(exc, httpx.LocalProtocolError):
        return type(exc).__name__  # its text may quote what we sent
    # Connection and remote protocol errors carry OS, TLS or server text: useful, and none of ours.
    return f"{type(exc).__name__}: {exc}"[:300]


def _read_some(response: httpx.Response) -> bytes:
    # Raw bytes (no decompression, we asked for identity): a gzip bomb cannot inflate here. Stop at the cap.
    data = b""
    for chunk in response.iter_raw():
        data += chunk
        if len(data) >= MAX_RESPONSE_BYTES:
            break
    return data[:MAX_RESPONSE_BYTES]


def send_attempt(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout: float,
    allowed_networks: Sequence[str],
    https_only: bool,
    now: datetime,
    resolve: Resolver = default_resolve,
) -> AttemptResult:
    """POST ``body`` once to ``url`` with ``headers`` (signed by the caller for this attempt) and classify the answer.

    ``timeout`` (at most 30 s) bounds the whole exchange, not each read. ``now`` dates a ``Retry-After`` HTTP-date.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < math.inf:
        raise ConfigError("webhook timeout must be a positive number of seconds")
    limit = min(float(timeout), MAX_TIMEOUT_SECONDS)
    request_headers = _checked_headers(headers)
    start = time.monotonic()

    def elapsed_ms() -> int:
        return int((time.monotonic() - start) * 1000)

    try:
        target = check_url(url, allowed_networks=allowed_networks, https_only=https_only, resolve=resolve)
    except UnsafeTargetError as exc:
        return AttemptResult(None, elapsed_ms(), "", str(exc), "failed", None)
    except TransientError as exc:  # the name did not resolve: DNS may be back by the next attempt
        return AttemptResult(None, elapsed_ms(), "", str(exc), "retry", None)

    transport = pinned_transport(target, deadline=start + limit)
    with httpx.Client(transport=transport, timeout=limit, follow_redirects=False, trust_env=False) as client:
        try:
            with client.stream("POST", url, content=body, headers=request_headers) as response:
                status = response.status_code
                error = "redirect not followed" if 300 <= status < 400 else None
                try:
                    raw = _read_some(response)
                except httpx.HTTPError as exc:  # the status stands; note why the body is short
                    raw, error = b"", _error_text(exc)
                retry_after = None
                if status in (429, 503):
                    retry_after = parse_retry_after(response.headers.get("retry-after"), now=now)
        except httpx.HTTPError as exc:
            return AttemptResult(None, elapsed_ms(), "", _error_text(exc), "retry", None)
    text = raw.decode("utf-8", errors="replace")
    return AttemptResult(status, elapsed_ms(), text, error, classify(status), retry_after)


def dbt_headers(secret: str, body: bytes) -> dict[str, str]:
    """Headers for an endpoint that verifies the dbt Cloud way (hex HMAC-SHA256 of the body in ``Authorization``)."""
    return {"Authorization": dbt_signature(secret, body)}
