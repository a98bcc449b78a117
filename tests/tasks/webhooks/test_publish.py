"""Webhooks out, for real: messages go over loopback HTTP to a receiver that verifies each one with the reference
``standardwebhooks`` and ``svix`` libraries. The clock is ours (near the real time, so those libraries' 5-minute
window holds), and ``dispatch_due`` is called pass by pass, as the deliver-webhooks flow would every minute."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bulletin.models import Artifact, Delivery, DeliveryStatus, Filter, Manifest, RunStatus
from bulletin.settings import Settings
from bulletin.store import Store, migrate, open_store
from bulletin.store import webhooks as wh
from bulletin.store.webhooks import MessageStatus
from tasks.webhooks import Result, dispatch_due, ping_event, report_events
from tasks.webhooks.events import prefect_events
from tasks.webhooks.publish import emit_run_events, publish_run_events

# the bucket is one channel keeping files; the tests below use S3
from tasks.webhooks.publish import file_links as s3_links
from tests.fixtures.prefect_server import free_port
from tests.fixtures.s3 import S3TestBucket, s3_settings
from tests.fixtures.webhook_receiver import Receiver, Reply, running_receiver

FAKE_TOKEN = "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhIn0.c2ln"
SHA = "ab" * 32


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as server:
        yield server


class Clock:
    """A clock tests move by hand; it starts at the real time so signatures are inside the verifiers' window."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)
        self.lock = threading.Lock()

    def __call__(self) -> datetime:
        with self.lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.now += timedelta(seconds=seconds)


def settings(tmp_path: Any = None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "webhook_retry_schedule": [0.0, 0.01, 0.01],
        "webhook_allowed_networks": ["127.0.0.0/8"],
        "webhook_timeout_seconds": 2.0,
        "webhook_concurrency": 4,
        **overrides,
    }
    return Settings(**values)


def subscribe(store: Store, receiver: Receiver, path: str = "/hook", **kwargs: Any) -> tuple[wh.Endpoint, str]:
    endpoint, secret = wh.add_endpoint(
        store, url=receiver.url(path), event_types=kwargs.pop("events", ["*"]), now=datetime.now(UTC), **kwargs
    )
    receiver.verify_with(path, secret)
    return endpoint, secret


def send(store: Store, clock: Clock, config: Settings, *, advance: float = 1.0, **kwargs: Any) -> Any:
    clock.advance(advance)
    return dispatch_due(store, config, now=clock, rng=random.Random(7), limit=100, **kwargs)


def one_message(store: Store, clock: Clock, event_type: str = "run.completed") -> wh.Message:
    (message,) = wh.enqueue(store, event_type=event_type, payload={"report_id": "weekly"}, now=clock())
    return message


def manifest() -> Manifest:
    started = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)
    pdf = Artifact(format="pdf", uri="s3://bucket/reports/weekly/alice.pdf", sha256=SHA, bytes=1234, rows=10)
    mail = Artifact(format="csv", uri="<id@bulletin>", sha256=SHA, bytes=99, rows=10, channel="email")
    return Manifest(
        report_id="weekly",
        run_id="run1",
        run_key="weekly@2026-11-02T07:00:00Z",
        started_at=started,
        finished_at=started + timedelta(seconds=5),
        status=RunStatus.PARTIAL,
        deliveries=[
            Delivery(
                recipient="alice",
                status=DeliveryStatus.DELIVERED,
                token_id="jti-1",
                secure_filters={"sales": [[Filter(field="region", op="=", value=FAKE_TOKEN)]]},
                artifacts=[pdf, mail],
            ),
            Delivery(recipient="bob", status=DeliveryStatus.FAILED, error="warehouse timed out"),
            Delivery(recipient="carol", status=DeliveryStatus.SKIPPED),
        ],
    )


# --- events (pure) ------------------------------------------------------------------------------------------------


def test_report_events_are_a_manifest_with_links_and_no_token() -> None:
    expires = datetime(2026, 11, 3, 7, 0, tzinfo=UTC)

    class Link:
        url = "https://bucket.s3.amazonaws.com/k?X-Amz-Signature=abc"
        expires_at = expires

    seen: list[str] = []

    def links(artifact: Artifact) -> Link | None:
        seen.append(artifact.uri)
        return Link() if artifact.uri.startswith("s3://") else None

    events = report_events(manifest(), links=links)
    assert [t for t, _ in events] == ["report.delivered", "report.failed", "run.completed"]
    delivered, failed, completed = (data for _, data in events)
    assert delivered["recipient"] == "alice" and delivered["run_key"] == "weekly@2026-11-02T07:00:00Z"
    pdf, mail = delivered["files"]
    assert pdf == {
        "format": "pdf",
        "channel": "s3",
        "uri": "s3://bucket/reports/weekly/alice.pdf",
        "sha256": SHA,
        "bytes": 1234,
        "rows": 10,
        "outcome": "sent",
        "download_url": Link.url,
        "expires_at": "2026-11-03T07:00:00Z",
    }
    assert mail["download_url"] is None and mail["expires_at"] is None
    assert failed == {
        "report_id": "weekly",
        "run_id": "run1",
        "run_key": "weekly@2026-11-02T07:00:00Z",
        "recipient": "bob",
        "org": None,
        "status": "FAILED",
        "files": [],
        "error": "warehouse timed out",
    }
    assert completed["counts"] == {"recipients": 3, "delivered": 1, "partial": 0, "skipped": 1, "failed": 1}
    assert completed["status"] == "PARTIAL"
    assert seen == [pdf["uri"], mail["uri"]], "links are asked for delivered files only"
    text = json.dumps(events)
    assert "eyJ" not in text and "jti-1" not in text and "region" not in text


def test_a_plain_url_link_and_no_links() -> None:
    events = report_events(manifest(), links=lambda a: "https://example.com/file")
    assert events[0][1]["files"][0]["download_url"] == "https://example.com/file"
    assert all(f["download_url"] is None for f in report_events(manifest())[0][1]["files"])


def partial_manifest() -> Manifest:
    """dave's S3 copy is stored and his email refused."""
    pdf = Artifact(format="pdf", uri="s3://bucket/reports/weekly/dave.pdf", sha256=SHA, bytes=1234, rows=10)
    refused = Artifact.model_validate(
        {**pdf.model_dump(), "channel": "email", "uri": "", "outcome": "failed", "note": "554 refused"}
    )
    dave = Delivery(recipient="dave", status=DeliveryStatus.PARTIAL, artifacts=[pdf, refused], error="email: 554")
    return manifest().model_copy(update={"deliveries": [dave]})


def test_a_partial_recipient_is_report_delivered_with_its_sent_and_failed_files() -> None:
    asked: list[str] = []

    def links(artifact: Artifact) -> str:
        asked.append(artifact.channel)
        return "https://example.com/presigned"

    events = report_events(partial_manifest(), links=links)
    assert [t for t, _ in events] == ["report.delivered", "run.completed"]
    data = events[0][1]
    assert data["status"] == "PARTIAL" and data["error"] == "email: 554"
    sent, failed = data["files"]
    assert (sent["channel"], sent["outcome"], sent["download_url"]) == ("s3", "sent", "https://example.com/presigned")
    assert (failed["channel"], failed["outcome"], failed["download_url"]) == ("email", "failed", None)
    assert asked == ["s3"], "a link only for the file the recipient has"
    assert events[1][1]["counts"] == {"recipients": 1, "delivered": 0, "partial": 1, "skipped": 0, "failed": 0}
    heard_failed_only = report_events(partial_manifest(), wanted=lambda t, org: t == "report.failed")
    assert heard_failed_only == [], "an endpoint hearing only report.failed is not told of a partial recipient"

    (recipient, _) = prefect_events(partial_manifest())
    assert recipient["event"] == "bulletin.report.delivered"
    assert recipient["payload"]["status"] == "PARTIAL" and recipient["payload"]["error"] == "email: 554"
    assert recipient["payload"]["files"] == [
        {"format": "pdf", "channel": "s3", "outcome": "sent", "rows": 10},
        {"format": "pdf", "channel": "email", "outcome": "failed", "rows": 10},
    ]


def test_prefect_events_name_the_report_and_relate_the_recipient() -> None:
    events = prefect_events(manifest())
    assert [e["event"] for e in events] == [
        "bulletin.report.delivered",
        "bulletin.report.failed",
        "bulletin.run.completed",
    ]
    delivered = events[0]
    assert delivered["resource"]["prefect.resource.id"] == "bulletin.report.weekly"
    assert {"prefect.resource.id": "bulletin.recipient.alice", "prefect.resource.role": "recipient"}.items() <= (
        delivered["related"][0].items()
    )
    assert delivered["payload"]["formats"] == ["csv", "pdf"]
    assert events[-1]["payload"]["counts"]["failed"] == 1
    assert "X-Amz" not in json.dumps(events) and "eyJ" not in json.dumps(events)


# --- dispatch over loopback HTTP ------------------------------------------------------------------------------------


def test_500_500_200_is_three_attempts_with_one_id_and_fresh_signatures(store: Store, receiver: Receiver) -> None:
    clock, config = Clock(), settings()
    subscribe(store, receiver)
    receiver.script("/hook", Reply(500, body=b"oops"), Reply(500))
    message = one_message(store, clock)
    results = [send(store, clock, config).results[message.id] for _ in range(3)]
    assert results == [Result.RETRYING, Result.RETRYING, Result.DELIVERED]
    got = receiver.received("/hook")
    assert len(got) == 3 and all(r.verified_by == (0,) for r in got)
    assert {r.headers["webhook-id"] for r in got} == {message.id}
    assert len({r.headers["webhook-timestamp"] for r in got}) == 3
    assert len({r.headers["webhook-signature"] for r in got}) == 3
    assert all(r.body == message.body for r in got)
    assert got[0].headers["content-type"] == "application/json"
    done = wh.get_message(store, message.id)
    assert done.status is MessageStatus.DELIVERED and done.attempts == 3 and done.last_status == 200
    attempts = wh.message_attempts(store, message_id=message.id)
    assert [a.status_code for a in attempts] == [200, 500, 500]
    assert attempts[-1].response_body == "oops" and all(a.duration_ms >= 0 for a in attempts)
    assert send(store, clock, config).results == {}, "nothing is due any more"


def test_an_endpoint_removed_during_an_attempt_is_no_warning(
    store: Store, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    clock, config = Clock(), settings()
    endpoint, _ = subscribe(store, receiver)
    message = one_message(store, clock)

    class RemovingClock(Clock):
        """Removes the endpoint the first time the time is asked once the request has arrived: mid-attempt."""

        def __call__(self) -> datetime:
            if receiver.received("/hook") and wh.list_endpoints(store):
                wh.remove_endpoint(store, endpoint.id)
            return super().__call__()

    with caplog.at_level(logging.INFO, logger="tasks.webhooks.dispatch"):
        summary = send(store, RemovingClock(), config)
    assert summary.results == {message.id: Result.REMOVED}
    assert len(receiver.received("/hook")) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert "removed during the attempt" in caplog.text


def test_410_disables_the_endpoint_and_tells_the_others(store: Store, receiver: Receiver) -> None:
    clock, config = Clock(), settings()
    gone, _ = subscribe(store, receiver, "/gone", description="old CRM")
    other, _ = subscribe(store, receiver, "/other", events=["report.failed"])
    receiver.script("/gone", Reply(410))
    (message,) = wh.enqueue(store, event_type="run.completed", payload={}, now=clock())
    summary = send(store, clock, config)
    assert summary.results == {message.id: Result.FAILED} and summary.disabled_endpoints == (gone.id,)
    endpoint = wh.get_endpoint(store, gone.id)
    assert not endpoint.enabled and "410" in (endpoint.disabled_reason or "")
    send(store, clock, config)
    (notice,) = receiver.received("/other")
    body = json.loads(notice.body)
    assert body["type"] == "endpoint.disabled" and body["data"]["endpoint_id"] == gone.id
    assert body["data"]["description"] == "old CRM" and "/gone" not in notice.body.decode()
    assert notice.verified_by == (0,) and wh.get_endpoint(store, other.id).enabled


def test_a_hanging_receiver_times_out_and_is_retried(store: Store, receiver: Receiver) -> None:
    clock, config = Clock(), settings(webhook_timeout_seconds=0.5)
    subscribe(store, receiver)
    receiver.script("/hook", Reply(200, hang=5))
    message = one_message(store, clock)
    assert send(store, clock, config).results == {message.id: Result.RETRYING}
    (attempt,) = wh.message_attempts(store, message_id=message.id)
    assert attempt.status_code is None and attempt.outcome == "retry" and attempt.error
    assert 400 <= attempt.duration_ms < 3000
    assert send(store, clock, config).results == {message.id: Result.DELIVERED}


def test_a_redirect_is_a_failure_and_is_not_followed(store: Store, receiver: Receiver) -> None:
    clock, config = Clock(), settings()
    subscribe(store, receiver)
    receiver.script("/hook", Reply(302, headers={"Location": receiver.url("/elsewhere")}))
    message = one_message(store, clock)
    assert send(store, clock, config).results[message.id] is not Result.DELIVERED
    assert receiver.received("/elsewhere") == []
    (attempt,) = wh.message_attempts(store, message_id=message.id)
    assert attempt.status_code == 302 and attempt.outcome != "success"


def test_retry_after_is_honoured(store: Store, receiver: Receiver) -> None:
    clock, config = Clock(), settings()
    subscribe(store, receiver)
    receiver.script("/hook", Reply(429, headers={"Retry-After": "30"}))
    message = one_message(store, clock)
    send(store, clock, config)
    (attempt,) = wh.message_attempts(store, message_id=message.id)
    waiting = wh.get_message(store, message.id)
    assert waiting.next_attempt_at is not None
    assert waiting.next_attempt_at - attempt.attempted_at >= timedelta(seconds=30)
    assert send(store, clock, config, advance=20).results == {}, "not before Retry-After"
    assert send(store, clock, config, advance=11).results == {message.id: Result.DELIVERED}


def test_exhausted_then_failed_then_redelivered(store: Store, receiver: Receiver) -> None:
    clock, config = Clock(), settings()
    subscribe(store, receiver)
    receiver.script("/hook", *[Reply(503)] * 3)
    message = one_message(store, clock)
    results = [send(store, clock, config).results.get(message.id) for _ in range(4)]
    assert results == [Result.RETRYING, Result.RETRYING, Result.FAILED, None]
    failed = wh.get_message(store, message.id)
    assert failed.status is MessageStatus.FAILED and failed.last_status == 503
    wh.redeliver(store, message.id, now=clock())
    assert send(store, clock, config).results == {message.id: Result.DELIVERED}
    assert len(wh.message_attempts(store, message_id=message.id)) == 4
    assert {r.headers["webhook-id"] for r in receiver.received()} == {message.id}


def test_rotation_signs_with_both_secrets_then_only_the_new(store: Store, receiver: Receiver) -> None:
    clock, config = Clock(), settings()
    endpoint, old = subscribe(store, receiver)
    _, new = wh.rotate_secret(store, endpoint.id, grace_seconds=60, now=clock())
    receiver.verify_with("/hook", old, new)
    one_message(store, clock)
    send(store, clock, config)
    during = receiver.received()[-1]
    assert len(during.signatures) == 2 and during.verified_by == (0, 1), "a receiver with the old secret accepts"
    clock.advance(61)
    one_message(store, clock)
    send(store, clock, config)
    after = receiver.received()[-1]
    assert len(after.signatures) == 1 and after.verified_by == (1,), "only the new secret signs after the grace"


def test_dbt_style_adds_an_authorization_hmac_of_the_body(store: Store, receiver: Receiver) -> None:
    clock, config = Clock(), settings()
    _, secret = subscribe(store, receiver, style="dbt")
    message = one_message(store, clock)
    send(store, clock, config)
    (got,) = receiver.received()
    assert got.headers["authorization"] == hmac.new(secret.encode(), message.body, hashlib.sha256).hexdigest()
    assert got.verified_by == (0,), "the Standard Webhooks headers are there too"


def test_an_endpoint_failing_past_the_window_is_disabled(store: Store, receiver: Receiver) -> None:
    clock, config = Clock(), settings(webhook_retry_schedule=[0, 0.01, 0.01, 0.01], webhook_disable_after_seconds=60)
    failing, _ = subscribe(store, receiver, "/down")
    subscribe(store, receiver, "/up")
    receiver.script("/down", *[Reply(500)] * 10)
    (message,) = wh.enqueue(store, event_type="run.completed", payload={}, now=clock(), endpoint_ids=[failing.id])
    assert send(store, clock, config).results == {message.id: Result.RETRYING}
    streak = wh.get_endpoint(store, failing.id).failing_since
    assert send(store, clock, config, advance=30).results == {message.id: Result.RETRYING}
    assert wh.get_endpoint(store, failing.id).failing_since == streak and wh.get_endpoint(store, failing.id).enabled
    summary = send(store, clock, config, advance=31)
    assert summary.results == {message.id: Result.FAILED} and summary.disabled_endpoints == (failing.id,)
    disabled = wh.get_endpoint(store, failing.id)
    assert not disabled.enabled and "failing without a break" in (disabled.disabled_reason or "")
    assert wh.get_message(store, message.id).status is MessageStatus.FAILED
    send(store, clock, config)
    (notice,) = receiver.received("/up")
    assert json.loads(notice.body)["type"] == "endpoint.disabled" and notice.verified_by == (0,)
    assert len(receiver.received("/down")) == 3


def test_a_success_clears_the_failing_streak(store: Store, receiver: Receiver) -> None:
    clock, config = Clock(), settings()
    endpoint, _ = subscribe(store, receiver)
    receiver.script("/hook", Reply(500))
    one_message(store, clock)
    send(store, clock, config)
    assert wh.get_endpoint(store, endpoint.id).failing_since is not None
    send(store, clock, config)
    assert wh.get_endpoint(store, endpoint.id).failing_since is None


def test_two_concurrent_dispatchers_send_each_message_once(store: Store, receiver: Receiver) -> None:
    clock, config = Clock(), settings(webhook_concurrency=4)
    subscribe(store, receiver)
    receiver.script("/hook", *[Reply(200, hang=0.02)] * 40)
    messages = [one_message(store, clock) for _ in range(20)]
    clock.advance(1)
    barrier = threading.Barrier(2)

    def dispatcher(seed: int) -> Any:
        barrier.wait()
        return dispatch_due(store, config, now=clock, rng=random.Random(seed), limit=100)

    threads_results: list[Any] = []
    threads = [threading.Thread(target=lambda s=s: threads_results.append(dispatcher(s))) for s in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    ids = [r.headers["webhook-id"] for r in receiver.received()]
    assert sorted(ids) == sorted(m.id for m in messages), "every message sent exactly once"
    assert sum(s.count(Result.DELIVERED) for s in threads_results) == 20
    assert all(wh.get_message(store, m.id).status is MessageStatus.DELIVERED for m in messages)


def test_loopback_is_refused_without_the_allowlist(store: Store, receiver: Receiver) -> None:
    clock, config = Clock(), settings(webhook_allowed_networks=[])
    subscribe(store, receiver)
    message = one_message(store, clock)
    assert send(store, clock, config).results == {message.id: Result.FAILED}
    assert receiver.received() == []
    (attempt,) = wh.message_attempts(store, message_id=message.id)
    assert attempt.outcome == "failed" and attempt.status_code is None and "loopback" in (attempt.error or "")
    assert wh.get_message(store, message.id).status is MessageStatus.FAILED


def test_only_the_given_messages_are_sent_and_a_deadline_defers_the_rest(store: Store, receiver: Receiver) -> None:
    clock, config = Clock(), settings()
    subscribe(store, receiver)
    first, second = one_message(store, clock), one_message(store, clock)
    assert send(store, clock, config, message_ids=[first.id]).results == {first.id: Result.DELIVERED}
    assert send(store, clock, config, deadline_seconds=-1).results == {second.id: Result.DEFERRED}
    assert wh.get_message(store, second.id).status is MessageStatus.PENDING


def test_no_secret_or_url_is_logged(store: Store, receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    clock, config = Clock(), settings()
    endpoint, secret = subscribe(store, receiver, "/hook?token=sekrit")
    receiver.script("/hook?token=sekrit", Reply(410))
    one_message(store, clock)
    send(store, clock, config)
    logs = "\n".join(r.getMessage() for r in caplog.records)
    assert endpoint.id in logs, "the attempt was logged"
    assert secret not in logs and secret[6:] not in logs and "sekrit" not in logs


# --- publish_run_events -------------------------------------------------------------------------------------------


def test_publish_enqueues_and_sends_at_once(store: Store, receiver: Receiver) -> None:
    clock, config = Clock(), settings()
    subscribe(store, receiver, events=["report.delivered", "run.completed"])
    ids = publish_run_events(config, store, manifest(), links=None, now=clock, rng=random.Random(1))
    assert len(ids) == 2
    got = receiver.received()
    assert sorted(json.loads(r.body)["type"] for r in got) == ["report.delivered", "run.completed"]
    assert all(r.verified_by == (0,) for r in got)
    assert all(wh.get_message(store, i).status is MessageStatus.DELIVERED for i in ids)
    assert all(b"eyJ" not in r.body and len(r.body) < 2000 for r in got)


def test_emit_run_events_gives_prefect_one_event_per_recipient_and_one_per_run() -> None:
    emitted: list[dict[str, Any]] = []
    assert emit_run_events(manifest(), emit=lambda **kw: emitted.append(kw)) == 3
    assert [e["event"] for e in emitted] == [
        "bulletin.report.delivered",
        "bulletin.report.failed",
        "bulletin.run.completed",
    ]


def test_publish_makes_links_only_for_events_someone_hears(store: Store, receiver: Receiver) -> None:
    asked: list[str] = []

    def links(artifact: Any) -> str:
        asked.append(artifact.uri)
        return "https://example.com/presigned"

    assert publish_run_events(settings(), store, manifest(), links=links) == []
    assert asked == [], "no endpoint: no link made, nothing queued"
    subscribe(store, receiver, events=["run.completed"])
    assert len(publish_run_events(settings(), store, manifest(), links=links, first_attempt=False)) == 1
    assert asked == [], "nobody hears report.delivered: still no link"
    assert [t for t, _ in report_events(manifest(), wanted=lambda t, org: t == "report.failed")] == ["report.failed"]


def test_publish_never_raises_and_leaves_unsent_messages_due(store: Store, receiver: Receiver) -> None:
    clock = Clock()
    endpoint, _ = wh.add_endpoint(store, url="http://127.0.0.1:9/closed", event_types=["*"], now=clock())
    ids = publish_run_events(settings(), store, manifest(), now=clock, rng=random.Random(1))
    assert len(ids) == 3
    assert all(wh.get_message(store, i).status is MessageStatus.PENDING for i in ids), "retried later"
    assert {a.endpoint_id for a in wh.message_attempts(store)} == {endpoint.id}


def test_emit_run_events_never_raises_when_prefect_refuses_them(caplog: pytest.LogCaptureFixture) -> None:
    def broken_emit(**_: Any) -> None:
        raise RuntimeError("events API down")

    assert emit_run_events(manifest(), emit=broken_emit) == 0
    assert "could not emit the Prefect event bulletin.run.completed: RuntimeError" in caplog.text


def test_publish_of_a_dry_run_sends_nothing(store: Store, receiver: Receiver) -> None:
    subscribe(store, receiver)
    dry = manifest().model_copy(update={"dry_run": True})
    emitted: list[Any] = []
    assert publish_run_events(settings(), store, dry) == []
    assert emit_run_events(dry, emit=lambda **kw: emitted.append(kw)) == 0
    assert emitted == [] and wh.list_messages(store) == []


def test_ping_event() -> None:
    assert ping_event("ep_1") == ("ping", {"endpoint_id": "ep_1", "message": "Bulletin webhook test"})


@pytest.mark.usefixtures("prefect_api")
def test_prefect_events_reach_the_api_with_the_run_related(tmp_path: Path) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    report_id = f"weekly-{uuid.uuid4().hex[:8]}"
    run = manifest().model_copy(update={"report_id": report_id})

    @flow(name="publish-test")
    def publish() -> tuple[list[str], int]:
        with open_store(f"sqlite:///{tmp_path / 'state.db'}") as store:
            migrate(store)
            return publish_run_events(settings(), store, run, rng=random.Random(1)), emit_run_events(run)

    assert publish() == ([], 3), "no endpoint: nothing queued, the Prefect events go out all the same"
    wanted = EventFilter(
        event=EventNameFilter(prefix=["bulletin."]),
        resource=EventResourceFilter(id=[f"bulletin.report.{report_id}"]),
    )
    deadline = time.monotonic() + 30
    while True:
        with get_client(sync_client=True) as client:
            events = client.read_events(filter=wanted, limit=50).events
        if len(events) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    names = sorted(e.event for e in events)
    assert names == ["bulletin.report.delivered", "bulletin.report.failed", "bulletin.run.completed"]
    delivered = next(e for e in events if e.event == "bulletin.report.delivered")
    roles = {r.role: r.id for r in delivered.related}
    assert roles["recipient"] == "bulletin.recipient.alice"
    assert roles.get("flow-run", "").startswith("prefect.flow-run."), "the run that published is related"
    assert delivered.payload["run_id"] == "run1"


def test_s3_links_are_presigned_downloads_of_the_delivered_file(s3_bucket: S3TestBucket) -> None:
    client, bucket, endpoint = s3_bucket
    client.put_object(Bucket=bucket, Key="reports/weekly/alice.pdf", Body=b"%PDF-1.7 report")
    config = s3_settings(endpoint, bucket, link_expiry_seconds=600)
    assert s3_links(Settings()) is None, "no bucket, no links"
    links = s3_links(config)
    assert links is not None
    stored = Artifact(format="pdf", uri=f"s3://{bucket}/reports/weekly/alice.pdf", sha256=SHA, bytes=15, rows=1)
    (delivered, *_) = report_events(manifest().model_copy(update={"deliveries": [
        Delivery(recipient="alice", status=DeliveryStatus.DELIVERED, artifacts=[stored]),
    ]}), links=links)  # fmt: skip
    (file,) = delivered[1]["files"]
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in file["download_url"] and file["expires_at"].endswith("Z")
    with urllib.request.urlopen(file["download_url"], timeout=10) as response:
        assert response.read() == b"%PDF-1.7 report"
    assert links(stored.model_copy(update={"uri": "<message-id@bulletin>", "channel": "email"})) is None


def test_s3_links_without_a_client_say_so_once_and_give_none(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The credentials block cannot be read, so no client can be made: without prefect-aws (not a dependency) it
    # cannot be imported; with it, the block's lookup meets a Prefect API on a closed port. Same answer either way.
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{free_port()}/api")
    links = s3_links(Settings(s3_bucket="bulletin-links", s3_aws_credentials_block="no-such-block"))
    assert links is not None
    stored = Artifact(format="pdf", uri="s3://bulletin-links/a.pdf", sha256=SHA, bytes=15, rows=1)
    with caplog.at_level(logging.WARNING, logger="tasks.webhooks.publish"):
        assert [links(stored), links(stored), links(stored)] == [None, None, None]
    warnings = [r.getMessage() for r in caplog.records if r.name == "tasks.webhooks.publish"]
    assert len(warnings) == 1 and "will carry no download links" in warnings[0]
