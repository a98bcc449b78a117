"""``bulletin webhooks ...``: the endpoints that hear about deliveries, their messages and every attempt.

Secrets are printed once, by ``add`` and ``rotate-secret``, and never listed. ``test`` and ``redeliver`` make one
attempt at once, in this process; ``dispatch`` runs the deliver-webhooks flow (what the deployment runs every
minute) once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from bulletin.clock import utc_now
from bulletin.errors import ConfigError

if TYPE_CHECKING:
    from rich.table import Table

    from bulletin.settings import Settings
    from bulletin.store import Store
    from bulletin.store.webhooks import Message

# The state store (SQLAlchemy, Alembic), settings and the senders are imported by the commands, not to list them:
# `bulletin --help` pays for none of them. The help texts name the event types and styles as words for the same
# reason; tests/cli/test_startup.py checks that they name every one the store knows.
EVENT_HELP = "report.delivered, report.failed, run.completed or *"
STYLE_HELP = "standard or dbt"

webhooks_app = typer.Typer(
    help="Signed webhooks out (Standard Webhooks): endpoints, messages, attempts.", no_args_is_help=True
)
# Wide enough for ids and URLs when the output is a file or a CI log rather than a terminal.
console = Console(width=None if Console().is_terminal else 200)


def _table(*headers: str) -> Table:
    """A table that folds long cells rather than cutting them: ids and URLs must be read whole."""
    from rich.table import Column, Table

    return Table(*(Column(header, overflow="fold") for header in headers))


@contextmanager
def _store(settings: Settings) -> Iterator[Store]:
    from bulletin.store import migrate, open_store

    with open_store(settings.database) as store:
        migrate(store)
        yield store


@webhooks_app.command("add")
def webhooks_add(
    url: str = typer.Argument(..., help="The receiver's http(s) URL."),
    events: list[str] = typer.Option(..., "--event", "-e", help=f"Event type to send (repeat): {EVENT_HELP}."),
    secret: str | None = typer.Option(None, "--secret", help="A whsec_ secret to use. Default: a new one."),
    style: str = typer.Option("standard", "--style", help=f"Signature style: {STYLE_HELP} (adds dbt's)."),
    description: str = typer.Option("", "--description", help="A note for people: whose endpoint, what for."),
) -> None:
    """Add an endpoint and print its id and secret (the secret is shown this once)."""
    from bulletin.settings import Settings
    from bulletin.store.webhooks import add_endpoint
    from tasks.webhooks import check_url_at_registration

    settings = Settings()
    if settings.webhook_https_only and not url.lower().startswith("https://"):
        raise ConfigError("BULLETIN_WEBHOOK_HTTPS_ONLY is set: the URL must be https://", field="url")
    # Refused now rather than at every send; a name that does not resolve yet is checked at each send.
    check_url_at_registration(
        url, allowed_networks=settings.webhook_allowed_networks, https_only=settings.webhook_https_only
    )
    with _store(settings) as store:
        endpoint, shown = add_endpoint(
            store, url=url, event_types=events, secret=secret, style=style, description=description, now=utc_now()
        )
    typer.echo(f"id: {endpoint.id}")
    typer.echo(f"secret: {shown}")
    typer.echo("store the secret now: it is not shown again", err=True)


@webhooks_app.command("list")
def webhooks_list(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List endpoints (never their secrets)."""
    from bulletin.settings import Settings
    from bulletin.store.webhooks import list_endpoints

    with _store(Settings()) as store:
        endpoints = list_endpoints(store)
    rows = [e.model_dump(mode="json", exclude={"secret", "previous_secret"}) for e in endpoints]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = _table("id", "url", "events", "style", "enabled", "failing since (UTC)", "description")
    for e in endpoints:
        state = "yes" if e.enabled else f"no: {e.disabled_reason or 'disabled'}"
        failing = f"{e.failing_since:%Y-%m-%d %H:%M:%S}" if e.failing_since else ""
        table.add_row(e.id, e.url, ", ".join(e.event_types), e.style, state, failing, e.description)
    console.print(table)


@webhooks_app.command("remove")
def webhooks_remove(endpoint_id: str = typer.Argument(..., help="The endpoint id (ep_...).")) -> None:
    """Remove an endpoint, with its messages and their attempts."""
    from bulletin.settings import Settings
    from bulletin.store.webhooks import remove_endpoint

    with _store(Settings()) as store:
        remove_endpoint(store, endpoint_id)
    typer.echo(f"removed {endpoint_id}")


@webhooks_app.command("rotate-secret")
def webhooks_rotate_secret(
    endpoint_id: str = typer.Argument(..., help="The endpoint id (ep_...)."),
    grace: int | None = typer.Option(
        None, "--grace", min=0, help="Seconds the old secret keeps signing too. Default: the setting (1 day)."
    ),
    secret: str | None = typer.Option(None, "--secret", help="The new whsec_ secret. Default: a new one."),
) -> None:
    """Give an endpoint a new secret (printed once); the old one keeps signing beside it for a grace period."""
    from bulletin.settings import Settings
    from bulletin.store.webhooks import rotate_secret

    settings = Settings()
    seconds = settings.webhook_secret_grace_seconds if grace is None else grace
    with _store(settings) as store:
        endpoint, shown = rotate_secret(store, endpoint_id, grace_seconds=seconds, now=utc_now(), secret=secret)
    typer.echo(f"secret: {shown}")
    until = endpoint.previous_secret_expires_at
    note = f"the old secret also signs until {until:%Y-%m-%d %H:%M:%S} UTC" if until else "the old secret is retired"
    typer.echo(f"store the secret now: it is not shown again; {note}", err=True)


@webhooks_app.command("enable")
def webhooks_enable(endpoint_id: str = typer.Argument(..., help="The endpoint id (ep_...).")) -> None:
    """Enable a disabled endpoint (failed messages stay failed: redeliver them)."""
    from bulletin.settings import Settings
    from bulletin.store.webhooks import enable_endpoint

    with _store(Settings()) as store:
        enable_endpoint(store, endpoint_id, now=utc_now())
    typer.echo(f"enabled {endpoint_id}")


@webhooks_app.command("disable")
def webhooks_disable(
    endpoint_id: str = typer.Argument(..., help="The endpoint id (ep_...)."),
    reason: str = typer.Option("disabled by hand", "--reason", help="Why, as shown by `webhooks list`."),
) -> None:
    """Disable an endpoint: nothing more is sent to it and its pending messages fail."""
    from bulletin.settings import Settings
    from bulletin.store.webhooks import disable_endpoint

    with _store(Settings()) as store:
        changed = disable_endpoint(store, endpoint_id, reason=reason, now=utc_now())
    typer.echo(f"disabled {endpoint_id}" if changed else f"{endpoint_id} was already disabled")


@webhooks_app.command("test")
def webhooks_test(endpoint_id: str = typer.Argument(..., help="The endpoint id (ep_...).")) -> None:
    """Send a signed `ping` event to one endpoint now and print the outcome (exit 1 unless delivered)."""
    from bulletin.settings import Settings
    from bulletin.store.webhooks import enqueue, get_endpoint
    from tasks.webhooks import ping_event

    settings = Settings()
    with _store(settings) as store:
        if not get_endpoint(store, endpoint_id).enabled:
            raise ConfigError(f"endpoint {endpoint_id} is disabled: `bulletin webhooks enable {endpoint_id}` first")
        event_type, data = ping_event(endpoint_id)
        queued = enqueue(store, event_type=event_type, payload=data, now=utc_now(), endpoint_ids=[endpoint_id])
        if not queued:  # disabled between the check and the enqueue
            raise ConfigError(f"endpoint {endpoint_id} is disabled")
        _attempt_now(settings, store, queued[0])


@webhooks_app.command("redeliver")
def webhooks_redeliver(message_id: str = typer.Argument(..., help="The message id (msg_...).")) -> None:
    """Queue a failed (or delivered) message again and attempt it now; its retries start over if that fails."""
    from bulletin.settings import Settings
    from bulletin.store.webhooks import redeliver

    settings = Settings()
    with _store(settings) as store:
        message = redeliver(store, message_id, now=utc_now())
        _attempt_now(settings, store, message)


@webhooks_app.command("messages")
def webhooks_messages(
    endpoint_id: str | None = typer.Option(None, "--endpoint", help="Only this endpoint's messages."),
    status: str | None = typer.Option(None, "--status", help="pending, delivering, delivered or failed."),
    limit: int = typer.Option(100, "--limit", min=1, max=10_000, help="At most this many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (with each payload) instead of a table."),
) -> None:
    """List messages, newest first: what was sent (or is due) to which endpoint, and how it went."""
    from bulletin.settings import Settings
    from bulletin.store.webhooks import MessageStatus, list_messages

    if status is not None and status not in {s.value for s in MessageStatus}:
        raise ConfigError(f"--status must be one of {', '.join(s.value for s in MessageStatus)}, not {status!r}")
    with _store(Settings()) as store:
        found = list_messages(
            store, endpoint_id=endpoint_id, status=None if status is None else MessageStatus(status), limit=limit
        )
    if as_json:
        shown = [{**m.model_dump(mode="json"), "payload": _without_link_signatures(m.payload)} for m in found]
        typer.echo(json.dumps(shown, indent=2))
        return
    table = _table("created (UTC)", "id", "endpoint", "type", "status", "tries", "last", "next attempt (UTC)")
    for m in found:
        last = m.last_error or ("" if m.last_status is None else str(m.last_status))
        due = f"{m.next_attempt_at:%Y-%m-%d %H:%M:%S}" if m.next_attempt_at else ""
        table.add_row(
            f"{m.created_at:%Y-%m-%d %H:%M:%S}", m.id, m.endpoint_id, m.event_type, m.status.value, str(m.attempts),
            last[:60], due,
        )  # fmt: skip
    console.print(table)


@webhooks_app.command("attempts")
def webhooks_attempts(
    endpoint_id: str | None = typer.Option(None, "--endpoint", help="Only this endpoint's attempts."),
    message_id: str | None = typer.Option(None, "--message", help="Only this message's attempts."),
    limit: int = typer.Option(100, "--limit", min=1, max=10_000, help="At most this many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (with response bodies) instead of a table."),
) -> None:
    """List delivery attempts, newest first: time, status, duration and the start of each response."""
    from bulletin.settings import Settings
    from bulletin.store.webhooks import message_attempts

    with _store(Settings()) as store:
        found = message_attempts(store, message_id=message_id, endpoint_id=endpoint_id, limit=limit)
    if as_json:
        typer.echo(json.dumps([a.model_dump(mode="json") for a in found], indent=2))
        return
    table = _table("time (UTC)", "message", "endpoint", "outcome", "status", "ms", "response or error")
    for a in found:
        detail = a.error or (a.response_body or "").replace("\n", " ")
        table.add_row(
            f"{a.attempted_at:%Y-%m-%d %H:%M:%S}", a.message_id, a.endpoint_id, a.outcome,
            "" if a.status_code is None else str(a.status_code), str(a.duration_ms), detail[:60],
        )  # fmt: skip
    console.print(table)


@webhooks_app.command("dispatch")
def webhooks_dispatch(
    limit: int = typer.Option(500, "--limit", min=1, max=10_000, help="At most this many messages."),
) -> None:
    """Run the deliver-webhooks flow once: one attempt at every due message (first tries and retries)."""
    from flows.deliver_webhooks import deliver_webhooks

    counts: dict[str, Any] = deliver_webhooks(limit=limit)
    typer.echo(json.dumps(counts, indent=2))


def _without_link_signatures(payload: str) -> Any:
    """The payload as JSON, each presigned ``download_url`` cut at its query string: the signature is a credential
    for the receiver, not something to print (the stored payload keeps it, to be re-sent byte for byte)."""
    body = json.loads(payload)
    for file in (body.get("data") or {}).get("files") or []:
        url = file.get("download_url")
        if isinstance(url, str) and "?" in url:
            file["download_url"] = url.split("?", 1)[0] + "?REDACTED"
    return body


def _attempt_now(settings: Settings, store: Store, message: Message) -> None:
    """One attempt at ``message`` now; print how it went, and exit 1 unless it was delivered."""
    from bulletin.store.webhooks import MessageStatus, get_message, message_attempts
    from tasks.webhooks.publish import send_now

    send_now(settings, store, [message.id])
    after = get_message(store, message.id)
    tried = message_attempts(store, message_id=message.id, limit=1)
    if not tried or tried[0].attempted_at < message.updated_at:
        typer.echo(f"{message.event_type} {message.id}: not attempted yet ({after.status.value}); see the log")
        raise typer.Exit(1)
    last = tried[0]
    status = "" if last.status_code is None else f" ({last.status_code})"
    line = f"{message.event_type} {message.id}: {after.status.value}{status} in {last.duration_ms} ms"
    if last.error:
        line += f": {last.error}"
    if after.status is MessageStatus.PENDING and after.next_attempt_at:
        line += f"; next attempt at {after.next_attempt_at:%Y-%m-%d %H:%M:%S} UTC"
    typer.echo(line)
    if after.status is not MessageStatus.DELIVERED:
        raise typer.Exit(1)
