"""Webhook attempts against real receivers on 127.0.0.1, and the retry policy that drives them.

Each receiver verifies every request with the reference ``standardwebhooks`` and ``svix`` verifiers (they read the
wall clock, so signatures here use real timestamps) and answers from a script: statuses, redirects, Retry-After,
a long body, or nothing at all.
"""

from __future__ import annotations

import http.server
import itertools
import json
import logging
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import standardwebhooks
import svix.webhooks

from bulletin.errors import ConfigError, TransientError
from tasks.webhooks import AttemptResult, generate_secret, send_attempt, standard_headers
from tasks.webhooks.send import classify, dbt_headers, next_attempt_delay, parse_retry_after, retry_delays
from tasks.webhooks.signing import verify_dbt

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
LOOPBACK = ["127.0.0.0/8"]
SECRET = generate_secret()
BODY = json.dumps({"type": "report.delivered", "report": "weekly-sales", "links": ["https://x.test/r"]}).encode()


# --- Retry policy ---


def test_retry_delays_accepts_the_default_schedule() -> None:
    assert retry_delays([0, 5, 300.0]) == [0.0, 5.0, 300.0]


@pytest.mark.parametrize(
    "schedule", [[], [0.0] * 31, [-1.0], [float("nan")], [float("inf")], [8 * 86_400.0], ["5"], [True], "0,5"]
)
def test_retry_delays_refuses_a_bad_schedule(schedule: object) -> None:
    with pytest.raises(ConfigError):
        retry_delays(schedule)  # type: ignore[arg-type]


def test_next_attempt_delay_applies_full_jitter_and_stops_when_exhausted() -> None:
    schedule, rng = [0.0, 5.0, 300.0], random.Random(7)
    assert next_attempt_delay(1, schedule, rng) == 0.0  # the first attempt goes now
    second = [d for _ in range(200) if (d := next_attempt_delay(2, schedule, rng)) is not None]
    third = [d for _ in range(200) if (d := next_attempt_delay(3, schedule, rng)) is not None]
    assert len(second) == len(third) == 200
    assert all(0 <= d <= 5 for d in second) and all(0 <= d <= 300 for d in third)
    assert max(third) > 150 > min(third)  # spread over the whole range, not bunched at the top
    assert next_attempt_delay(4, schedule, rng) is None


def test_next_attempt_delay_is_reproducible_with_a_seeded_rng() -> None:
    schedule = [0.0, 5.0, 300.0]
    assert next_attempt_delay(3, schedule, random.Random(1)) == next_attempt_delay(3, schedule, random.Random(1))


@pytest.mark.parametrize("attempt", [0, -1, True])
def test_attempt_numbers_start_at_one(attempt: int) -> None:
    with pytest.raises(ConfigError, match="start at 1"):
        next_attempt_delay(attempt, [0.0], random.Random(0))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        ("999999", 3600.0),  # clamped
        ("9" * 60, 3600.0),
        (format_datetime(NOW + timedelta(seconds=90), usegmt=True), 90.0),
        ("Sat, 01 Mar 2025 12:02:00 GMT", 120.0),
        ("Sat, 01 Mar 2025 11:00:00 GMT", 0.0),  # in the past: now
        ("Sat, 01 Mar 2025 12:01:00 -0000", 60.0),
        (None, None),
        ("", None),
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("Sat, 99 Foo 2025 12:02:00 GMT", None),
        ("9" * 100, None),
        ("²", None),
        ("٣", None),  # an Arabic-Indic digit
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


def test_parse_retry_after_honours_a_custom_cap_and_needs_an_aware_clock() -> None:
    assert parse_retry_after("600", now=NOW, max_seconds=60) == 60.0
    with pytest.raises(ConfigError):
        parse_retry_after("5", now=NOW.replace(tzinfo=None))


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        *[(200, "success"), (204, "success"), (299, "success"), (410, "gone"), (301, "retry"), (308, "retry")],
        *[(400, "retry"), (401, "retry"), (404, "retry"), (429, "retry"), (500, "retry"), (503, "retry")],
    ],
)
def test_classify(status: int, outcome: str) -> None:
    assert classify(status) == outcome


# --- Real receivers ---


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"ok":true}'
    hang: bool = False


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    verified_by_standardwebhooks: bool
    verified_by_svix: bool


@dataclass
class Receiver:
    port: int
    replies: deque[Reply] = field(default_factory=deque)
    received: list[Received] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def _verifies(verify: Callable[[], object]) -> bool:
    try:
        verify()
    except standardwebhooks.WebhookVerificationError:
        return False
    return True


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        receiver: Receiver = self.server.receiver  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        headers = {name.lower(): value for name, value in self.headers.items()}
        receiver.received.append(
            Received(
                headers,
                body,
                _verifies(lambda: standardwebhooks.Webhook(SECRET).verify(body, headers)),
                _verifies(lambda: svix.webhooks.Webhook(SECRET).verify(body, headers)),
            )
        )
        reply = receiver.replies.popleft() if receiver.replies else Reply()
        if reply.hang:
            receiver.stop.wait(5)  # bounded, and released at teardown
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    servers: list[tuple[http.server.ThreadingHTTPServer, Receiver]] = []

    def start(*replies: Reply) -> Receiver:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        receiver = Receiver(port=server.server_address[1], replies=deque(replies))
        server.receiver = receiver  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append((server, receiver))
        return receiver

    yield start
    for server, receiver in servers:
        receiver.stop.set()
        server.shutdown()
        server.server_close()


def _send(url: str, headers: dict[str, str], **overrides: object) -> AttemptResult:
    options: dict[str, object] = {"timeout": 2.0, "allowed_networks": LOOPBACK, "https_only": False, "now": NOW}
    options.update(overrides)
    return send_attempt(url, BODY, headers, **options)  # type: ignore[arg-type]


def _signed(msg_id: str = "msg_1") -> dict[str, str]:
    return standard_headers([SECRET], msg_id, int(time.time()), BODY)


def test_500_500_200_is_three_attempts_of_one_message_each_freshly_signed(receivers: Callable[..., Receiver]) -> None:
    receiver = receivers(Reply(500), Reply(500), Reply(200))
    schedule, rng = [0.0, 0.02, 0.02, 0.02], random.Random(3)
    # A clock that moves on between attempts, as a real schedule would (the reference verifiers allow +-5 min).
    clock = itertools.count(int(time.time()) - 60, 7)
    outcomes = []
    attempt = 1
    while (delay := next_attempt_delay(attempt, schedule, rng)) is not None:
        time.sleep(delay)
        result = _send(receiver.url(), standard_headers([SECRET], "msg_2mN4bXkQp8r", next(clock), BODY))
        outcomes.append(result.outcome)
        if result.outcome != "retry":
            break
        attempt += 1
    assert outcomes == ["retry", "retry", "success"]
    assert len(receiver.received) == 3
    assert all(r.verified_by_standardwebhooks and r.verified_by_svix for r in receiver.received)
    assert {r.headers["webhook-id"] for r in receiver.received} == {"msg_2mN4bXkQp8r"}
    assert len({r.headers["webhook-timestamp"] for r in receiver.received}) == 3
    assert len({r.headers["webhook-signature"] for r in receiver.received}) == 3
    assert all(r.body == BODY for r in receiver.received)


def test_a_success_records_status_duration_and_body(receivers: Callable[..., Receiver]) -> None:
    receiver = receivers(Reply(202, body=b'{"queued":true}'))
    result = _send(receiver.url(), _signed())
    assert result == AttemptResult(202, result.duration_ms, '{"queued":true}', None, "success", None)
    assert 0 <= result.duration_ms < 2000
    sent = receiver.received[0].headers
    assert sent["content-type"] == "application/json" and sent["user-agent"] == "Bulletin-Webhooks/1"
    assert sent["host"] == f"127.0.0.1:{receiver.port}"


def test_410_means_gone(receivers: Callable[..., Receiver]) -> None:
    receiver = receivers(Reply(410, body=b"endpoint deleted"))
    result = _send(receiver.url(), _signed())
    assert (result.outcome, result.status_code, result.response_body) == ("gone", 410, "endpoint deleted")


def test_a_redirect_is_never_followed(receivers: Callable[..., Receiver]) -> None:
    elsewhere = receivers()
    receiver = receivers(Reply(301, headers={"Location": elsewhere.url("/stolen")}))
    result = _send(receiver.url(), _signed())
    assert (result.outcome, result.status_code) == ("retry", 301)
    assert result.error == "redirect not followed"
    assert elsewhere.received == []


@pytest.mark.parametrize(
    ("status", "retry_after", "expected"),
    [(429, "7", 7.0), (429, "86400", 3600.0), (503, "Sat, 01 Mar 2025 12:00:30 GMT", 30.0), (429, "soon", None)],
)
def test_429_and_503_carry_retry_after_clamped(
    receivers: Callable[..., Receiver], status: int, retry_after: str, expected: float | None
) -> None:
    receiver = receivers(Reply(status, headers={"Retry-After": retry_after}))
    result = _send(receiver.url(), _signed())
    assert (result.outcome, result.status_code, result.retry_after) == ("retry", status, expected)


def test_retry_after_is_ignored_on_other_statuses(receivers: Callable[..., Receiver]) -> None:
    receiver = receivers(Reply(500, headers={"Retry-After": "7"}))
    assert _send(receiver.url(), _signed()).retry_after is None


def test_a_hanging_receiver_times_out_and_is_retried(receivers: Callable[..., Receiver]) -> None:
    receiver = receivers(Reply(hang=True))
    start = time.monotonic()
    result = _send(receiver.url(), _signed(), timeout=0.5)
    assert (result.outcome, result.status_code) == ("retry", None)
    assert result.error is not None and result.error.startswith("timed out")
    assert result.duration_ms >= 400 and time.monotonic() - start < 2.0


def test_only_the_first_4_kb_of_the_answer_is_kept(receivers: Callable[..., Receiver]) -> None:
    receiver = receivers(Reply(500, body=b"\xff" + b"e" * 200_000))
    result = _send(receiver.url(), _signed())
    assert len(result.response_body) == 4096 and result.response_body.startswith("\ufffd")


def test_an_internal_target_fails_without_a_request(receivers: Callable[..., Receiver]) -> None:
    receiver = receivers()
    result = _send(receiver.url(), _signed(), allowed_networks=[])
    assert (result.outcome, result.status_code) == ("failed", None)
    assert result.error is not None and "loopback" in result.error
    assert receiver.received == []


def test_https_only_fails_an_http_target(receivers: Callable[..., Receiver]) -> None:
    receiver = receivers()
    assert _send(receiver.url(), _signed(), https_only=True).outcome == "failed"
    assert receiver.received == []


def test_the_request_goes_to_the_checked_address(receivers: Callable[..., Receiver]) -> None:
    receiver = receivers()
    calls: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"]  # bulletin.test exists nowhere else

    result = _send(f"http://bulletin.test:{receiver.port}/hook", _signed(), resolve=resolve)
    assert result.outcome == "success" and calls == ["bulletin.test"]
    assert receiver.received[0].headers["host"] == f"bulletin.test:{receiver.port}"


def test_a_name_that_does_not_resolve_is_retried() -> None:
    def resolve(host: str, port: int) -> list[str]:
        raise TransientError(f"webhook host {host!r} did not resolve")

    result = _send("http://gone.test/hook", _signed(), resolve=resolve)
    assert (result.outcome, result.error) == ("retry", "webhook host 'gone.test' did not resolve")


def test_a_refused_connection_is_retried() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago, with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = _send(f"http://127.0.0.1:{port}/hook", _signed())
    assert (result.outcome, result.status_code) == ("retry", None)
    assert result.error is not None and result.error.startswith("ConnectError")


def test_dbt_style_headers_verify_the_dbt_way(receivers: Callable[..., Receiver]) -> None:
    receiver = receivers()
    dbt_secret = "plain-dbt-style-secret"
    assert _send(receiver.url(), dbt_headers(dbt_secret, BODY)).outcome == "success"
    received = receiver.received[0]
    verify_dbt(dbt_secret, received.headers["authorization"], received.body)


@pytest.mark.parametrize(
    "headers",
    [{"X-Bad": "a\r\nInjected: 1"}, {"Host": "elsewhere.test"}, {"Content-Length": "1"}, {"Bad Name": "x"}],
)
def test_headers_that_cannot_be_sent_as_given_are_a_config_error(headers: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="webhook header"):
        _send("http://127.0.0.1:9/hook", headers)


@pytest.mark.parametrize("timeout", [0, -1, float("inf"), float("nan"), True])
def test_a_bad_timeout_is_a_config_error(timeout: float) -> None:
    with pytest.raises(ConfigError, match="timeout"):
        _send("http://127.0.0.1:9/hook", _signed(), timeout=timeout)


def test_no_log_record_carries_the_url_or_the_signature(
    receivers: Callable[..., Receiver], caplog: pytest.LogCaptureFixture
) -> None:
    receiver = receivers()
    headers = _signed()
    assert logging.getLogger("httpx").level == logging.WARNING  # set when tasks.webhooks.send was imported
    with caplog.at_level(logging.DEBUG):  # the root at DEBUG: only the httpx logger's own level keeps it quiet
        result = _send(receiver.url("/hook?token=s3cr3t-in-query"), headers)
    assert result.outcome == "success"
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "s3cr3t-in-query" not in logged
    assert headers["webhook-signature"].removeprefix("v1,") not in logged
