"""``bulletin webhooks ...`` against a real loopback receiver that verifies every signature with the reference
library. Commands run in-process through Typer's runner; the state store is a fresh SQLite file per test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from bulletin.edge.cli.webhooks import webhooks_app
from bulletin.errors import ConfigError, NotFoundError, UnsafeTargetError
from bulletin.settings import Settings
from bulletin.store import open_store
from bulletin.store import webhooks as wh
from tests.fixtures.webhook_receiver import Receiver, Reply, running_receiver

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as server:
        yield server


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BULLETIN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BULLETIN_DATABASE_URL", raising=False)
    monkeypatch.setenv("BULLETIN_WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8")
    monkeypatch.setenv("BULLETIN_WEBHOOK_RETRY_SCHEDULE", "0,0.01")
    monkeypatch.setenv("BULLETIN_WEBHOOK_TIMEOUT_SECONDS", "2")
    return tmp_path / "home"


def run(*args: str) -> Result:
    return CliRunner().invoke(webhooks_app, list(args))


def add(url: str, *extra: str) -> tuple[str, str]:
    result = run("add", url, "--event", "report.delivered", "-e", "run.completed", *extra)
    assert result.exit_code == 0, result.output
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    return lines["id"], lines["secret"]


def test_add_prints_the_id_and_secret_once_and_list_never_does(env: Path) -> None:
    endpoint_id, secret = add("https://hooks.example.com/x", "--description", "finance CRM")
    assert endpoint_id.startswith("ep_") and secret.startswith("whsec_")
    table = run("list")
    assert table.exit_code == 0 and endpoint_id in table.stdout and "finance CRM" in table.stdout
    listed = run("list", "--json")
    (row,) = json.loads(listed.stdout)
    assert row["id"] == endpoint_id and row["event_types"] == ["report.delivered", "run.completed"]
    assert "secret" not in row and "previous_secret" not in row
    assert secret[6:] not in table.stdout + listed.stdout


def test_add_with_a_given_secret_and_bad_input(env: Path) -> None:
    _, secret = add("https://hooks.example.com/x", "--secret", SECRET, "--style", "dbt")
    assert secret == SECRET
    bad = run("add", "https://hooks.example.com/y", "--event", "report.delivered", "--secret", "whsec_tooshort")
    assert isinstance(bad.exception, ConfigError) and "tooshort" not in str(bad.exception)
    unknown = run("add", "https://hooks.example.com/y", "--event", "report.exploded")
    assert isinstance(unknown.exception, ConfigError)
    assert len(json.loads(run("list", "--json").stdout)) == 1


def test_https_only_is_checked_at_add(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BULLETIN_WEBHOOK_HTTPS_ONLY", "true")
    result = run("add", "http://hooks.example.com/x", "--event", "run.completed")
    assert isinstance(result.exception, ConfigError) and "https" in str(result.exception)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/x",
        "http://2130706433/x",  # 127.0.0.1 in decimal
        "http://0x7f.1/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.7/x",
        "http://[::1]/x",
        "http://localhost:9/x",  # a name that resolves to loopback
    ],
)
def test_add_refuses_an_internal_target_unless_the_allowlist_opens_it(
    env: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.delenv("BULLETIN_WEBHOOK_ALLOWED_NETWORKS")
    refused = run("add", url, "--event", "run.completed")
    assert isinstance(refused.exception, UnsafeTargetError), refused.output
    assert "internal address" in str(refused.exception) and refused.exception.exit_code == 2
    assert json.loads(run("list", "--json").stdout) == [], "nothing is stored"


def test_add_accepts_what_the_allowlist_opens_and_a_name_not_resolving_yet(env: Path) -> None:
    add("http://127.0.0.1:9/x")  # the env fixture allows 127.0.0.0/8
    add("https://receiver.invalid/x")  # checked again at every send, where a failure is an attempt to retry
    assert len(json.loads(run("list", "--json").stdout)) == 2


def test_test_pings_one_endpoint_and_prints_the_outcome(env: Path, receiver: Receiver) -> None:
    endpoint_id, secret = add(receiver.url("/a"))
    add(receiver.url("/b"))
    receiver.verify_with("/a", secret)
    result = run("test", endpoint_id)
    assert result.exit_code == 0, result.output
    assert "ping msg_" in result.stdout and "delivered (200)" in result.stdout
    (got,) = receiver.received()
    assert got.path == "/a" and got.verified_by == (0,) and json.loads(got.body)["type"] == "ping"


def test_a_failed_test_exits_1_and_redeliver_sends_again(env: Path, receiver: Receiver) -> None:
    endpoint_id, secret = add(receiver.url("/a"))
    receiver.verify_with("/a", secret)
    receiver.script("/a", Reply(500, body=b"down for maintenance"), Reply(500))
    first = run("test", endpoint_id)
    assert first.exit_code == 1 and "pending (500)" in first.stdout and "next attempt at" in first.stdout
    message_id = first.stdout.split()[1].rstrip(":")
    with open_store(Settings().database) as store:  # exhaust the schedule: the second attempt fails for good
        from tasks.webhooks.publish import send_now

        store_message = wh.get_message(store, message_id)
        assert store_message.next_attempt_at is not None
        # type: ignore[arg-type, return-value]
        send_now(Settings(), store, [message_id], now=lambda: store_message.next_attempt_at)
        assert wh.get_message(store, message_id).status is wh.MessageStatus.FAILED
    listed = json.loads(run("messages", "--status", "failed", "--json").stdout)
    assert [m["id"] for m in listed] == [message_id]
    again = run("redeliver", message_id)
    assert again.exit_code == 0, again.output
    assert "delivered (200)" in again.stdout
    attempts = json.loads(run("attempts", "--message", message_id, "--json").stdout)
    assert [a["status_code"] for a in attempts] == [200, 500, 500]
    assert attempts[-1]["response_body"] == "down for maintenance"
    assert {r.headers["webhook-id"] for r in receiver.received()} == {message_id}
    assert all(r.verified_by == (0,) for r in receiver.received())
    table = run("attempts", "--endpoint", endpoint_id)
    assert table.exit_code == 0 and "down for maintenance" in table.stdout


def test_rotate_secret_prints_the_new_secret_and_both_sign(env: Path, receiver: Receiver) -> None:
    endpoint_id, old = add(receiver.url("/a"))
    result = run("rotate-secret", endpoint_id, "--grace", "3600")
    assert result.exit_code == 0
    new = result.stdout.split("secret: ")[1].strip()
    assert new.startswith("whsec_") and new != old and "also signs until" in result.stderr
    receiver.verify_with("/a", old, new)
    assert run("test", endpoint_id).exit_code == 0
    assert receiver.received()[0].verified_by == (0, 1)


def test_disable_enable_and_remove(env: Path, receiver: Receiver) -> None:
    endpoint_id, _ = add(receiver.url("/a"))
    assert "disabled" in run("disable", endpoint_id, "--reason", "maintenance").stdout
    refused = run("test", endpoint_id)
    assert isinstance(refused.exception, ConfigError) and receiver.received() == []
    assert "maintenance" in run("list").stdout
    assert run("enable", endpoint_id).exit_code == 0
    assert run("test", endpoint_id).exit_code == 0
    assert run("remove", endpoint_id).exit_code == 0
    assert json.loads(run("list", "--json").stdout) == []
    missing = run("remove", endpoint_id)
    assert isinstance(missing.exception, NotFoundError) and missing.exception.exit_code == 3


def test_bad_options_are_clear_errors(env: Path) -> None:
    result = run("messages", "--status", "lost")
    assert isinstance(result.exception, ConfigError)
    assert isinstance(run("redeliver", "msg_nope").exception, NotFoundError)
    assert isinstance(run("test", "ep_nope").exception, NotFoundError)


def test_every_command_has_help() -> None:
    for command in ("add", "list", "remove", "rotate-secret", "enable", "disable", "test", "redeliver", "messages",
                    "attempts", "dispatch"):  # fmt: skip
        result = run(command, "--help")
        assert result.exit_code == 0 and "Usage" in result.stdout and len(result.stdout) > 100, command


@pytest.mark.usefixtures("prefect_api")
def test_dispatch_runs_the_deliver_webhooks_flow(env: Path, receiver: Receiver) -> None:
    _, secret = add(receiver.url("/a"))
    receiver.verify_with("/a", secret)
    with open_store(Settings().database) as store:
        from datetime import UTC, datetime

        (message,) = wh.enqueue(store, event_type="run.completed", payload={"n": 1}, now=datetime.now(UTC))
    result = run("dispatch", "--limit", "10")
    assert result.exit_code == 0, result.output
    counts: dict[str, Any] = json.loads(result.stdout)
    assert counts["delivered"] == 1 and counts["attempted"] == 1
    (got,) = receiver.received()
    assert got.headers["webhook-id"] == message.id and got.verified_by == (0,)
