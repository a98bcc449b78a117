"""Webhook delivery benchmark: our dispatcher beside a naive sequential httpx loop, to a loopback receiver.

    .venv/bin/python -m bench.bench_webhooks                  # 1,000 messages per case, best of 3 (a few minutes)
    .venv/bin/python -m bench.bench_webhooks --quick          # 100 messages, fewer iterations: a smoke run
    .venv/bin/python -m bench.bench_webhooks --concurrency 8 --repeat 1

Receiver: a ``http.server.ThreadingHTTPServer`` (HTTP/1.1, keep-alive, a thread per connection) in a separate
process on a free 127.0.0.1 port. It verifies every request with the reference ``standardwebhooks`` library
(``Webhook.verify``, which also parses the JSON), counts verified, failed and distinct ``webhook-id`` values, and
answers 204. It stops when the benchmark closes its stdin, or after an hour whatever happens.

Messages: ``report.delivered`` events built by ``tasks.webhooks.report_events`` from a synthetic manifest
(one delivered recipient per message, two files each, one with a presigned-style download link), wrapped by the
store's ``event_body``: about 1 KB of JSON each.

Ours: the real pipeline, ``tasks.webhooks.dispatch_due``, in a fresh process: a SQLite state store in a temporary
folder (migrated), one endpoint on the receiver (``webhook_allowed_networks=["127.0.0.0/8"]``), every message
enqueued with ``enqueue`` (timed separately, not counted), then one ``dispatch_due`` pass at
``webhook_concurrency`` = each ``--concurrency`` value. Per message it claims the message (a write transaction),
signs it with a fresh timestamp, runs the SSRF check, POSTs over a transport pinned to the checked address (a new
client, connection and SSL context per attempt, as in production) and records the attempt (a write transaction).
Afterwards the store must hold every message as delivered with exactly one successful attempt each.

Baseline: what a user would write: in a fresh process, one ``httpx.Client`` (keep-alive), and for each message
``standardwebhooks.Webhook.sign`` with a fresh timestamp and a POST. No store, no SSRF check, no retries.

Cases run interleaved (baseline, then ours at each concurrency, then again) ``--repeat`` times; the fastest run of
each is kept. Seconds: the dispatch (or the loop) only. CPU columns are CPU seconds during that time: the sending
process, the receiver process, and "others": what the rest of the shared machine used, in cores.

Micro-benchmarks (one fresh process): signing and verifying one ~1 KB body, ``--iterations`` calls, best of 3:
ours (``sign``, ``standard_headers``, ``verify_standard``) beside ``standardwebhooks.Webhook`` (constructed once,
as a receiver would). Both sides are first checked to produce and accept each other's signatures.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import random
import resource
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SECRET_ENV = "BENCH_WEBHOOK_SECRET"
RECEIVER_MAX_SECONDS = 3_600
CHILD_TIMEOUT_SECONDS = 900
EVENT_TYPE = "report.delivered"


# --- measuring (Linux /proc and getrusage) --------------------------------------------------------------------------


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine so far: every process, every core."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(x) for x in Path("/proc/stat").read_text().split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Meter:
    """Wall time and CPU of this process, the receiver and the whole machine over a ``with`` block."""

    def __init__(self, receiver_pid: int) -> None:
        self.receiver_pid = receiver_pid
        self.values: dict[str, float] = {}

    def __enter__(self) -> Meter:
        self._start = (
            time.perf_counter(),
            self_cpu_seconds(),
            process_cpu_seconds(self.receiver_pid),
            machine_cpu_seconds(),
        )
        return self

    def __exit__(self, *exc: object) -> None:
        end = (time.perf_counter(), self_cpu_seconds(), process_cpu_seconds(self.receiver_pid), machine_cpu_seconds())
        seconds, mine, receiver, machine = (b - a for a, b in zip(self._start, end, strict=True))
        self.values = {
            "seconds": seconds,
            "cpu_sender": mine,
            "cpu_receiver": receiver,
            "others_cores": max(0.0, machine - mine - receiver) / seconds if seconds > 0 else 0.0,
        }


# --- the messages ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    """A presigned download link as ``tasks.storage.s3.presign_download`` returns one (fake signature, never used)."""

    url: str
    expires_at: datetime


def payloads(count: int) -> list[dict[str, Any]]:
    """``count`` realistic ``report.delivered`` data dicts, built by our own event code from a synthetic manifest."""
    from bulletin.models import Artifact, Delivery, DeliveryStatus, Manifest, RunStatus
    from tasks.webhooks import REPORT_DELIVERED, report_events

    rng = random.Random(11)
    started = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
    run_id = "3f1c9a52-6d0e-4b7a-9a57-0c2d8e41b6f3"
    prefix = "s3://bulletin-reports/acme/daily-orders/2026-11-23"

    def artifact(recipient: str, fmt: str) -> Artifact:
        return Artifact(
            format=fmt,
            uri=f"{prefix}/{recipient}/report.{fmt}",
            sha256=rng.randbytes(32).hex(),
            bytes=rng.randint(20_000, 900_000),
            rows=rng.randint(100, 5_000),
        )

    deliveries = []
    for index in range(count):
        recipient = f"ana{index:05d}@c{index % 97:02d}.example.com"
        deliveries.append(
            Delivery(
                recipient=recipient,
                status=DeliveryStatus.DELIVERED,
                token_id=uuid.UUID(int=rng.getrandbits(128)).hex,
                artifacts=[artifact(recipient, "xlsx"), artifact(recipient, "pdf")],
            )
        )
    manifest = Manifest(
        report_id="daily-orders",
        run_id=run_id,
        run_key="daily-orders/2026-11-23",
        started_at=started,
        finished_at=started + timedelta(minutes=3),
        status=RunStatus.COMPLETED,
        deliveries=deliveries,
    )

    def link(artifact: Artifact) -> Link | None:
        if artifact.format != "xlsx":
            return None  # one file with a link, one without: both shapes appear in every message
        key = artifact.uri.removeprefix("s3://bulletin-reports/")
        url = (
            f"https://bulletin-reports.s3.amazonaws.com/{key}?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            "&X-Amz-Credential=AKIAFAKEBENCH%2F20261123%2Fus-east-1%2Fs3%2Faws4_request"
            f"&X-Amz-Date=20261123T060300Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
            f"&X-Amz-Signature={rng.randbytes(32).hex()}"
        )
        return Link(url, started + timedelta(days=1, minutes=3))

    return [data for kind, data in report_events(manifest, links=link) if kind == REPORT_DELIVERED]


def bodies(count: int) -> list[bytes]:
    """The exact bytes the store would hold (``event_body``), for the baseline and the micro-benchmarks."""
    from bulletin.store.webhooks import event_body

    now = datetime.now(UTC)
    return [event_body(EVENT_TYPE, data, now=now).encode("ascii") for data in payloads(count)]


# --- the receiver (its own process) ---------------------------------------------------------------------------------


def run_receiver() -> None:
    """Serve on a free 127.0.0.1 port, print it, verify every POST with ``standardwebhooks``; stop on stdin EOF."""
    from standardwebhooks import Webhook

    verifier = Webhook(os.environ[SECRET_ENV])
    lock = threading.Lock()
    stats: dict[str, Any] = {"requests": 0, "verified": 0, "failed": 0, "errors": []}
    seen: set[str] = set()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive for clients that reuse connections (the baseline does)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {name.lower(): value for name, value in self.headers.items()}
            try:
                verifier.verify(body, headers)  # json_parse=True by default: a receiver reads the event
                ok, error = True, None
            except Exception as exc:
                ok, error = False, f"{type(exc).__name__}: {exc}"
            with lock:
                stats["requests"] += 1
                stats["verified" if ok else "failed"] += 1
                if error and len(stats["errors"]) < 5:
                    stats["errors"].append(error)
                seen.add(headers.get("webhook-id", ""))
            self.send_response(204 if ok else 401)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            with lock:
                if self.path == "/reset":
                    stats.update(requests=0, verified=0, failed=0, errors=[])
                    seen.clear()
                answer = json.dumps({**stats, "distinct_ids": len(seen)}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 256  # the default backlog of 5 would drop SYNs under 16 concurrent connections
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)

    def stop_on_eof() -> None:
        sys.stdin.read()
        server.shutdown()

    threading.Thread(target=stop_on_eof, daemon=True).start()
    threading.Timer(RECEIVER_MAX_SECONDS, server.shutdown).start()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        os._exit(0)  # the lifetime timer thread must not keep the process alive


class Receiver:
    """The receiver process, started and stopped by the parent; ``stats`` and ``reset`` over loopback HTTP."""

    def __init__(self, secret: str) -> None:
        env = {**os.environ, SECRET_ENV: secret}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.bench_webhooks", "--receiver"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline().strip())
        self.url = f"http://127.0.0.1:{self.port}/hooks/bulletin"

    def _get(self, path: str) -> dict[str, Any]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request("GET", path)
            return dict(json.loads(connection.getresponse().read()))
        finally:
            connection.close()

    def reset(self) -> None:
        self._get("/reset")

    def stats(self) -> dict[str, Any]:
        return self._get("/stats")

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


# --- the measured cases (each in a fresh process) -------------------------------------------------------------------


def child_baseline(url: str, count: int, receiver_pid: int) -> dict[str, Any]:
    """Naive: one httpx.Client, Webhook.sign with a fresh timestamp, POST, next."""
    import httpx
    from standardwebhooks import Webhook

    secret = os.environ[SECRET_ENV]
    messages = [(f"msg_{uuid.uuid4().hex}", body) for body in bodies(count)]
    ok = 0
    with httpx.Client(timeout=15.0, trust_env=False) as client, Meter(receiver_pid) as meter:
        signer = Webhook(secret)
        for msg_id, body in messages:
            now = datetime.now(UTC)
            headers = {
                "webhook-id": msg_id,
                "webhook-timestamp": str(math.floor(now.timestamp())),
                "webhook-signature": signer.sign(msg_id, now, body.decode("ascii")),
                "content-type": "application/json",
            }
            response = client.post(url, content=body, headers=headers)
            ok += 200 <= response.status_code < 300
    return {**meter.values, "ok": ok}


def share_one_ssl_context() -> None:
    """Diagnostic only, in this process: ``httpx.create_ssl_context()`` with defaults builds one context, once.

    ``tasks.webhooks.ssrf.PinnedTransport`` builds a fresh one per attempt (loading certifi's CA bundle), also for
    http://.
    """
    import httpx

    original = httpx.create_ssl_context
    shared = original(verify=True, trust_env=False)

    def create_ssl_context(verify: Any = True, cert: Any = None, trust_env: bool = True) -> Any:
        if verify is True and cert is None:
            return shared
        return original(verify=verify, cert=cert, trust_env=trust_env)

    httpx.create_ssl_context = create_ssl_context


def profile_attempts() -> tuple[Any, Callable[[], dict[str, float]]]:
    """Diagnostic only: cProfile inside the worker thread (concurrency 1) around each ``_dispatch_one`` call.

    Leans on a private name of ``tasks.webhooks.dispatch``; only ``--profile`` uses it. Returns the profiler and a
    function summing its time by cause (seconds for the whole pass).
    """
    import cProfile
    import pstats

    import tasks.webhooks.dispatch as dispatch

    profiler = cProfile.Profile()
    original = dispatch._dispatch_one

    def profiled(*args: Any, **kwargs: Any) -> Any:
        profiler.enable()
        try:
            return original(*args, **kwargs)
        finally:
            profiler.disable()

    dispatch._dispatch_one = profiled

    def breakdown() -> dict[str, float]:
        stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
        causes = {
            "SSL context: load_verify_locations (CA bundle)": ("load_verify_locations",),
            "SQLite commit (fsync, 2 write transactions)": ("'commit' of 'sqlite3.Connection'",),
            "socket connect/send/recv": ("of '_socket.socket'",),
        }
        out = dict.fromkeys(causes, 0.0)
        total = 0.0
        for (filename, _line, name), (_cc, _nc, tottime, _ct, _callers) in stats.items():
            total += tottime
            label = f"{filename}:{name}"
            for cause, needles in causes.items():
                if any(n in label for n in needles):
                    out[cause] += tottime
        out["everything else (Python: SQLAlchemy, pydantic, httpx, signing)"] = total - sum(out.values())
        out["total"] = total
        return out

    return profiler, breakdown


def child_ours(
    url: str, count: int, receiver_pid: int, concurrency: int, *, ssl_once: bool = False, profile: bool = False
) -> dict[str, Any]:
    """The real pipeline: SQLite store, one endpoint, ``count`` enqueued messages, one ``dispatch_due`` pass."""
    from bulletin.settings import Settings
    from bulletin.store import migrate, open_store
    from bulletin.store.webhooks import MessageStatus, add_endpoint, enqueue, list_messages, message_attempts
    from tasks.webhooks import Result, dispatch_due

    secret = os.environ[SECRET_ENV]
    data = payloads(count)
    if ssl_once:
        share_one_ssl_context()
    breakdown = profile_attempts()[1] if profile else None
    with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as folder:
        settings = Settings(
            home=Path(folder),
            database_url=f"sqlite:///{folder}/bulletin.db",
            webhook_allowed_networks=["127.0.0.0/8"],
            webhook_concurrency=concurrency,
        )
        with open_store(settings.database) as store:
            migrate(store)
            endpoint, _ = add_endpoint(
                store, url=url, event_types=[EVENT_TYPE], secret=secret, description="bench", now=datetime.now(UTC)
            )
            start = time.perf_counter()
            for payload in data:
                enqueue(store, event_type=EVENT_TYPE, payload=payload, now=datetime.now(UTC))
            enqueue_seconds = time.perf_counter() - start
            with Meter(receiver_pid) as meter:
                summary = dispatch_due(
                    store, settings, now=lambda: datetime.now(UTC), rng=random.Random(7), limit=count
                )
            delivered = list_messages(store, endpoint_id=endpoint.id, status=MessageStatus.DELIVERED, limit=10_000)
            attempts = message_attempts(store, endpoint_id=endpoint.id, limit=10_000)
            body_bytes = len(delivered[0].body) if delivered else 0
    return {
        **meter.values,
        "ok": summary.count(Result.DELIVERED),
        "summary": summary.as_dict(),
        "delivered_in_store": len(delivered),
        "attempts_recorded": len(attempts),
        "successful_attempts": sum(a.outcome == "success" for a in attempts),
        "messages_with_one_attempt": sum(m.attempts == 1 for m in delivered),
        "enqueue_seconds": enqueue_seconds,
        "body_bytes": body_bytes,
        "profile": breakdown() if breakdown else None,
    }


def best_rate(call: Callable[[], object], iterations: int, repeat: int = 3) -> float:
    """Calls per second: ``iterations`` calls, the fastest of ``repeat`` rounds."""
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(iterations):
            call()
        best = min(best, time.perf_counter() - start)
    return iterations / best


def child_micro(iterations: int) -> dict[str, Any]:
    """Signing and verifying rates of one ~1 KB body: ours beside ``standardwebhooks``, after an interop check."""
    from standardwebhooks import Webhook

    from tasks.webhooks import sign, standard_headers, verify_standard

    secret = os.environ[SECRET_ENV]
    body = bodies(1)[0]
    text = body.decode("ascii")
    msg_id = f"msg_{uuid.uuid4().hex}"
    reference = Webhook(secret)
    when = datetime.now(UTC)
    timestamp = math.floor(when.timestamp())

    # Interop first: the same signature, and each side accepts the other's headers.
    ours = standard_headers([secret], msg_id, timestamp, body)
    theirs = {"webhook-id": msg_id, "webhook-timestamp": str(timestamp)}
    theirs["webhook-signature"] = reference.sign(msg_id, when, text)
    assert ours["webhook-signature"] == theirs["webhook-signature"], "signatures differ"
    assert verify_standard([secret], theirs, body, now=datetime.now(UTC)) == msg_id
    reference.verify(body, ours)

    rates = {
        "sign ours": best_rate(lambda: sign([secret], msg_id, timestamp, body), iterations),
        "sign ours headers": best_rate(lambda: standard_headers([secret], msg_id, timestamp, body), iterations),
        "sign reference": best_rate(lambda: reference.sign(msg_id, when, text), iterations),
        "verify ours": best_rate(lambda: verify_standard([secret], ours, body, now=datetime.now(UTC)), iterations),
        "verify reference": best_rate(lambda: reference.verify(body, ours, json_parse=False), iterations),
        "verify reference json": best_rate(lambda: reference.verify(body, ours), iterations),
    }
    return {"rates": rates, "body_bytes": len(body), "iterations": iterations}


def run_child(args: argparse.Namespace) -> None:
    if args.child == "micro":
        result = child_micro(args.iterations)
    elif args.child == "baseline":
        result = child_baseline(args.url, args.messages, args.receiver_pid)
    else:  # ours-<concurrency>[-ssl-once|-profile]
        _, level, *variant = args.child.split("-", 2)
        result = child_ours(
            args.url,
            args.messages,
            args.receiver_pid,
            int(level),
            ssl_once=variant == ["ssl-once"],
            profile=variant == ["profile"],
        )
    print(json.dumps(result))


def child_env(secret: str) -> dict[str, str]:
    """The environment of a measured process: the secret, and no BULLETIN_* setting from the caller's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULLETIN_")}
    return {**env, SECRET_ENV: secret}


def measure(case: str, secret: str, extra: list[str]) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.bench_webhooks", "--child", case, *extra]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env=child_env(secret),
        timeout=CHILD_TIMEOUT_SECONDS,
    )
    if done.returncode != 0:
        raise SystemExit(f"{case} failed:\n{done.stderr.strip()[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# --- the report -----------------------------------------------------------------------------------------------------


def machine() -> str:
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln),
        platform.processor() or "unknown",
    )
    libs = ["httpx", "httpcore", "h11", "standardwebhooks", "svix", "sqlalchemy", "pydantic"]
    versions = []
    for lib in libs:
        try:
            versions.append(f"{lib} {metadata.version(lib)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{lib} (not installed)")
    load = Path("/proc/loadavg").read_text().split()[:3]
    return (
        f"- date: {datetime.now(UTC):%Y-%m-%d}\n- machine: {os.cpu_count()} cores (nproc), {cpu}; "
        f"load average at start {' '.join(load)}\n"
        f"- Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {ssl.OPENSSL_VERSION}; "
        f"{', '.join(versions)}"
    )


def delivery_row(label: str, concurrency: str, result: dict[str, Any], count: int, baseline: float | None) -> str:
    seconds = float(result["seconds"])
    rate = count / seconds
    ratio = "" if baseline is None else f"{rate / baseline:.2f}x"
    recv = result["receiver"]
    store = (
        f"{result['delivered_in_store']:,} / {result['attempts_recorded']:,}" if "delivered_in_store" in result else "-"
    )
    return (
        f"| {label} | {concurrency} | {seconds:.2f} | {rate:,.0f} | {ratio} | {result['cpu_sender']:.2f} | "
        f"{result['cpu_receiver']:.2f} | {result['others_cores']:.2f} | {recv['verified']:,} / {recv['failed']:,} | "
        f"{store} |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 messages, 2,000 iterations, one run: a smoke run")
    parser.add_argument("--messages", type=int, default=None, help="messages per case (default 1,000; quick 100)")
    parser.add_argument("--concurrency", default="1,8,16", help="webhook_concurrency values for ours, comma-separated")
    parser.add_argument("--repeat", type=int, default=None, help="runs per case, interleaved (default 3, quick 1)")
    parser.add_argument("--iterations", type=int, default=None, help="micro-benchmark calls (default 20,000)")
    parser.add_argument(
        "--diagnostic-concurrency",
        type=int,
        default=8,
        help="also ours at this concurrency with one shared SSL context, patched in the bench process (0: skip)",
    )
    parser.add_argument(
        "--profile", type=int, default=None, help="messages of the profiled pass at concurrency 1 (0: skip)"
    )
    parser.add_argument("--receiver", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--receiver-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    count = args.messages or (100 if args.quick else 1_000)
    iterations = args.iterations or (2_000 if args.quick else 20_000)
    if args.receiver:
        run_receiver()
        return
    if args.child:
        args.messages, args.iterations = count, iterations
        run_child(args)
        return
    if not 1 <= count <= 10_000:
        raise SystemExit("--messages must be 1-10,000 (one dispatch pass)")
    repeat = args.repeat or (1 if args.quick else 3)
    if args.profile is None:
        args.profile = min(count, 200)
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]

    from tasks.webhooks import generate_secret

    secret = generate_secret()
    print(f"# Webhook benchmark ({'quick' if args.quick else 'full'}, best of {repeat})\n\n{machine()}\n")

    micro = measure("micro", secret, ["--iterations", str(iterations)])
    rates = micro["rates"]
    print(f"## Signing and verifying ({micro['body_bytes']:,}-byte body, {iterations:,} calls, best of 3)\n")
    print("| operation | implementation | per second | µs per call | vs standardwebhooks |\n|---|---|---:|---:|---:|")
    rows = [
        ("sign", "standardwebhooks `Webhook.sign` (baseline)", "sign reference", None),
        ("sign", "ours `sign`", "sign ours", "sign reference"),
        ("sign", "ours `standard_headers` (what dispatch calls)", "sign ours headers", "sign reference"),
        ("verify", "standardwebhooks `Webhook.verify(json_parse=False)` (baseline)", "verify reference", None),
        ("verify", "standardwebhooks `Webhook.verify` (default: also json.loads)", "verify reference json", None),
        ("verify", "ours `verify_standard`", "verify ours", "verify reference"),
    ]
    for operation, label, key, versus in rows:
        rate = rates[key]
        ratio = f"{rate / rates[versus]:.2f}x" if versus else ""
        print(f"| {operation} | {label} | {rate:,.0f} | {1e6 / rate:.1f} | {ratio} |", flush=True)

    receiver = Receiver(secret)
    cases = ["baseline", *(f"ours-{c}" for c in levels)]
    if args.diagnostic_concurrency:
        cases.append(f"ours-{args.diagnostic_concurrency}-ssl-once")
    runs: dict[str, list[dict[str, Any]]] = {case: [] for case in cases}
    profile: dict[str, Any] | None = None
    try:
        extra = ["--url", receiver.url, "--receiver-pid", str(receiver.process.pid)]
        for round_ in range(1, repeat + 1):
            for case in cases:
                receiver.reset()
                result = measure(case, secret, [*extra, "--messages", str(count)])
                result["receiver"] = receiver.stats()
                runs[case].append(result)
                print(
                    f"<!-- round {round_} {case}: {result['seconds']:.2f} s, {count / result['seconds']:,.0f} msg/s, "
                    f"receiver {result['receiver']['verified']} verified {result['receiver']['failed']} failed -->",
                    flush=True,
                )
        if args.profile:
            receiver.reset()
            profile = measure("ours-1-profile", secret, [*extra, "--messages", str(args.profile)])
            profile["receiver"] = receiver.stats()
    finally:
        receiver.close()

    problems = []
    checked = [(case, r, count) for case, results in runs.items() for r in results]
    if profile is not None:
        checked.append(("ours-1-profile", profile, args.profile))
    for case, result, expected in checked:
        recv = result["receiver"]
        if result["ok"] != expected or recv["verified"] != expected or recv["failed"]:
            problems.append(f"{case}: sender ok {result['ok']}, receiver {recv}")
        if recv["distinct_ids"] != expected:
            problems.append(f"{case}: {recv['distinct_ids']} distinct webhook-id values, not {expected}")
        if case != "baseline" and not (
            result["delivered_in_store"]
            == result["attempts_recorded"]
            == result["successful_attempts"]
            == result["messages_with_one_attempt"]
            == expected
        ):
            problems.append(f"{case}: store {result}")

    best = {case: min(results, key=lambda r: float(r["seconds"])) for case, results in runs.items()}
    baseline_rate = count / float(best["baseline"]["seconds"])
    print(f"\n## Delivery ({count:,} messages of {best[cases[-1]]['body_bytes']:,} bytes, best of {repeat})\n")
    print(
        "| case | concurrency | seconds | msg/s | vs baseline | CPU s sender | CPU s receiver | others (cores) "
        "| receiver verified / failed | store delivered / attempts |\n|---|---:|---:|---:|---:|---:|---:|---:|---|---|"
    )
    print(delivery_row("naive httpx loop (baseline)", "1", best["baseline"], count, None))
    for level in levels:
        print(delivery_row("bulletin `dispatch_due`", str(level), best[f"ours-{level}"], count, baseline_rate))
    if args.diagnostic_concurrency:
        level = args.diagnostic_concurrency
        label = "diagnostic: ours, one SSL context per process (patched in the bench only)"
        print(delivery_row(label, str(level), best[f"ours-{level}-ssl-once"], count, baseline_rate))
    print("\nAll runs, msg/s (fastest first):\n")
    for case, results in runs.items():
        speeds = sorted((count / float(r["seconds"]) for r in results), reverse=True)
        print(f"- {case}: {', '.join(f'{s:,.0f}' for s in speeds)}")
    enqueue = [float(r["enqueue_seconds"]) for case in cases[1:] for r in runs[case]]
    if enqueue:
        print(f"- enqueue (ours, untimed setup): {count / min(enqueue):,.0f} messages/s at best, one call each")
    if profile is not None:
        n = args.profile
        print(f"\n## Where one attempt's time goes (ours, concurrency 1, {n:,} messages under cProfile)\n")
        print(f"Profiled pass: {float(profile['seconds']):.2f} s, {n / float(profile['seconds']):,.0f} msg/s.\n")
        print("| cause | ms per message | share |\n|---|---:|---:|")
        total = profile["profile"]["total"]
        for cause, seconds in profile["profile"].items():
            share = "" if cause == "total" else f"{seconds / total:.0%}"
            print(f"| {cause} | {seconds / n * 1000:.1f} | {share} |")
    if problems:
        print("\nCHECKS FAILED:\n" + "\n".join(f"- {p}" for p in problems))
        raise SystemExit(1)
    print("\nChecks passed: every run delivered every message, each verified once by the receiver (distinct ids);")
    print("for ours, the store holds each as delivered with exactly one successful attempt.")


if __name__ == "__main__":
    main()
