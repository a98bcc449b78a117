"""S3 upload CPU per put (issue 14): ours against the old way, both in the same run against moto on loopback.

    .venv/bin/python -m bench.bench_s3_put                      # plain HTTP, 300 puts x 3 rounds per way
    .venv/bin/python -m bench.bench_s3_put --https              # moto serving TLS with a throwaway certificate
    .venv/bin/python -m bench.bench_s3_put --puts 50 --rounds 1 # a smoke test

What is timed: N PutObject calls of one ~75 KB incompressible file (an XLSX is a zip), each under a new key, with
the same headers a delivery sends (If-None-Match: *, SSE, Content-Disposition, metadata), over one client built by
``make_s3_client`` (the per-process client, kept across puts). The ways take turns, ten calls at a time, so that a
load spike on the shared machine falls on all of them.

- ``old``: what ``S3Destination.put`` did before issue 14: hash the file (sha256_file), then put_object with the
  open file as the body; botocore then reads it for its CRC32 checksum and, over plain HTTP, for the SigV4 payload
  hash (over HTTPS it sends UNSIGNED-PAYLOAD and wraps the body in aws-chunked encoding with a CRC32 trailer).
- ``ours``: ``S3Destination.put(..., sha256=<the render's digest>)``: no hash of the file, the body read once into
  memory, the digest sent as x-amz-checksum-sha256 (S3 checks the body against it).
- with ``--extra``, variants measured and not kept: ours with ``Config(parameter_validation=False)``, and ours
  without botocore's ``Expect: 100-continue``.
- ``connect``: opening and closing one connection to moto (TCP, plus the TLS handshake with --https): moto's
  server (werkzeug) answers every request with ``Connection: close``, so against moto every put pays one; AWS S3
  keeps connections alive, so on AWS this part is mostly gone.

- ``ours through obstore``: ``S3Destination.put`` with its fast path (tasks/storage/s3_fast.py): the same request
  through obstore (Rust's object_store), which checks the body against the digest first. Plain HTTP only.

CPU: this process's (time.process_time: boto3, botocore, urllib3, hashing, and obstore's Rust threads) and moto's
process (/proc), per put.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import socket
import ssl
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.bench_delivery import REGION, fake_aws_env, moto_server, process_cpu_seconds

BUCKET = "bench-s3-put"
CONTENT_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
METADATA = {"report": "bench", "recipient": "r-0001", "run": "run-1", "token-jti": "jti-1"}
SSE = {"ServerSideEncryption": "AES256"}

Put = Callable[[str], None]
#: Calls of one way in a row before the next takes its turn.
BLOCK = 10


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 (and its key), trusted by this run only."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "moto.crt", folder / "moto.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def old_put(client: Any, source: Path) -> Put:
    """The put before issue 14 (tasks/storage/s3.py at c888dd4), for files under the multipart threshold."""
    from tasks.storage.base import sha256_file
    from tasks.storage.s3_rules import content_disposition

    def put(key: str) -> None:
        digest = sha256_file(source)
        with source.open("rb") as body:
            client.put_object(
                Bucket=BUCKET,
                Key=key,
                ContentDisposition=content_disposition(key.rpartition("/")[2]),
                ContentType=CONTENT_TYPE,
                Metadata={**METADATA, "sha256": digest},
                **SSE,
                Body=body,
                IfNoneMatch="*",
            )

    return put


def our_put(client: Any, source: Path, digest: str, fast: Any = None) -> Put:
    from tasks.storage.s3 import S3Destination

    destination = S3Destination(client, BUCKET, fast=fast)

    def put(key: str) -> None:
        destination.put(key, source, content_type=CONTENT_TYPE, metadata=METADATA, sha256=digest)

    return put


def obstore_put(settings: Any) -> tuple[Any, str | None]:
    """``S3Destination``'s fast path (tasks/storage/s3_fast.py) over the shared session, or None and why it declines
    (with --https: the throwaway certificate is an AWS_CA_BUNDLE, which the fast path leaves to boto3)."""
    from tasks.storage.s3_clients import shared_s3
    from tasks.storage.s3_fast import declines, make_fast_put

    session, client = shared_s3(settings)
    why = declines(settings, session)
    if why is not None:
        return None, why
    return make_fast_put(settings, session, BUCKET, SSE, region=client.meta.region_name), None


def connect_only(endpoint: str, cafile: Path | None) -> Put:
    host, port = endpoint.rpartition("/")[2].split(":")
    context = ssl.create_default_context(cafile=str(cafile)) if cafile else None

    def connect(key: str) -> None:
        del key
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            if context is not None:
                with context.wrap_socket(raw, server_hostname=host):
                    pass

    return connect


def clients(settings: Any, extra: bool) -> dict[str, Any]:
    import boto3
    from botocore.config import Config
    from botocore.handlers import add_expect_header

    from tasks.storage.s3_clients import make_s3_client

    made = {"old": make_s3_client(settings, pool_connections=16), "ours": make_s3_client(settings, pool_connections=16)}
    if extra:
        # The validator is chosen when a client is built: the same configuration plus parameter_validation=False.
        unchecked = made["ours"].meta.config.merge(Config(parameter_validation=False))
        made["ours, no param validation"] = boto3.session.Session().client(
            "s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region, config=unchecked
        )
        made["ours, no Expect: 100-continue"] = make_s3_client(settings, pool_connections=16)
        made["ours, no Expect: 100-continue"].meta.events.unregister("before-call.s3.PutObject", add_expect_header)
    return made


def measure(ways: dict[str, Put], puts: int, rounds: int, moto_pid: int) -> dict[str, tuple[float, float]]:
    """CPU seconds (this process, moto) per call of each way. The ways take turns ``BLOCK`` calls at a time, each turn
    starting with the next way, so that a load spike on the shared machine falls on all of them alike."""
    totals = {name: [0.0, 0.0] for name in ways}
    names = list(ways)
    for n, name in enumerate(names):
        ways[name](f"warm/way-{n}/0.xlsx")  # the first call of a way builds botocore's caches
    calls = 0
    for turn in range(-(-puts * rounds // BLOCK)):
        for n in range(len(names)):
            name = names[(turn + n) % len(names)]
            ours0, moto0 = time.process_time(), process_cpu_seconds(moto_pid)
            for i in range(BLOCK):
                ways[name](f"bench/way-{names.index(name)}/r-{turn:05d}-{i:03d}/report.xlsx")
            totals[name][0] += time.process_time() - ours0
            totals[name][1] += process_cpu_seconds(moto_pid) - moto0
        calls += BLOCK
    return {name: (c / calls, m / calls) for name, (c, m) in totals.items()}


def ratio(value: float, base: float) -> str:
    """``value / base``; "-" when the base is zero (moto's CPU is read in 10 ms ticks: a short run may see none)."""
    return f"{value / base:6.2f}" if base else f"{'-':>6}"


def report(results: dict[str, tuple[float, float]], args: argparse.Namespace, endpoint: str) -> None:
    base_client, base_moto = results["old"]
    print(f"{args.puts * args.rounds} puts per way, {args.size} bytes, {endpoint.split(':')[0]}")
    print(f"{'way':34} {'client ms':>10} {'x old':>6} {'moto ms':>8} {'x old':>6}")
    for name, (client, moto) in results.items():
        print(f"{name:34} {client * 1e3:10.2f} {ratio(client, base_client)} {moto * 1e3:8.2f} {ratio(moto, base_moto)}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (2 cores, shared machine)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--puts", type=int, default=300, help="puts per way per round (rounds x puts in all)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=75_000, help="bytes in the file uploaded")
    parser.add_argument("--https", action="store_true", help="moto serves TLS (a throwaway certificate)")
    parser.add_argument("--extra", action="store_true", help="also the variants measured and not kept")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-s3-put-"))
    env = fake_aws_env(work)
    tls = self_signed(work) if args.https else None
    if tls:
        env["AWS_CA_BUNDLE"] = str(tls[0])  # botocore trusts the throwaway certificate, and only it
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    source = work / "report.xlsx"
    source.write_bytes(os.urandom(args.size))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    from bulletin.settings import Settings

    with moto_server(env, work / "moto.log", tls=tls) as (endpoint, moto_pid):
        settings = Settings(s3_bucket=BUCKET, s3_endpoint_url=endpoint, s3_region=REGION)
        made = clients(settings, args.extra)
        made["old"].create_bucket(Bucket=BUCKET)
        ways: dict[str, Put] = {"old": old_put(made["old"], source)}
        ways.update({name: our_put(client, source, digest) for name, client in made.items() if name != "old"})
        fast, declined = obstore_put(settings)
        if fast is not None:
            ways["ours through obstore"] = our_put(made["ours"], source, digest, fast)
        ways["connect"] = connect_only(endpoint, tls[0] if tls else None)
        report(measure(ways, args.puts, args.rounds, moto_pid), args, endpoint)
        if declined:
            print(f"ours through obstore: not measured ({declined})")


if __name__ == "__main__":
    main()
