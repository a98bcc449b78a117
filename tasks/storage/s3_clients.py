"""One boto3 S3 client per process and configuration, shared by every run, lane and delivery of that process.

Why: a run used to build its own client (tasks/delivery/registry.py's ``Shared`` lives as long as a run's
services). Each client is a fresh boto3 session, which parses botocore's S3 model again, and a fresh connection
pool, whose first requests pay the TCP (and, on AWS, TLS) handshakes again: a worker process serving one shard after
another, or a server running many small runs, paid both per run. boto3's clients are thread-safe (its sessions are
not, so a client is built under a lock), and its pool keeps ``POOL_CONNECTIONS`` connections alive: at least the
lanes of a run (four task threads, tasks/delivery/fanout.py) times a few runs at once in one process.

A forked process gets a client of its own (a pool's sockets must not be shared across processes). Credentials from
the AWS chain that expire (roles, SSO) are refreshed inside the client; a prefect-aws credentials block is read when
the client is built, so a changed block reaches a process when it restarts, or after ``forget_s3_clients``.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import boto3
from botocore.config import Config

from bulletin.errors import ConfigError
from bulletin.settings import Settings
from tasks.storage.s3_fast import forget_fast_puts

#: A boto3 S3 client. boto3 ships no type hints, so this is ``Any`` by necessity.
S3Client = Any

#: Connections each client's pool keeps alive; botocore's default is 10.
POOL_CONNECTIONS = 16


def _aws_session(block_name: str | None) -> Any:
    """A fresh boto3 session (the default one is not thread-safe), from the AWS chain or a prefect-aws block."""
    if block_name is None:
        return boto3.session.Session()
    try:
        from prefect_aws import AwsCredentials  # optional: only this setting needs it
    except ImportError as exc:
        raise ConfigError(
            "BULLETIN_S3_AWS_CREDENTIALS_BLOCK is set but prefect-aws is not installed: pip install prefect-aws"
        ) from exc
    try:
        block = AwsCredentials.load(block_name, _sync=True)
    except ValueError as exc:
        raise ConfigError(f"no prefect-aws AwsCredentials block named {block_name!r}") from exc
    return block.get_boto3_session()


def make_s3_client(settings: Settings, *, pool_connections: int = 10, session: Any = None) -> S3Client:
    """A new boto3 S3 client for ``settings``: SigV4, standard retries, path-style addressing on custom endpoints,
    ``pool_connections`` kept alive. Deliveries share one per process (``tasks.storage.s3_clients``). ``session``:
    the boto3 session to build it from (default: a new one for ``settings``' credentials)."""
    options: dict[str, Any] = {
        "max_pool_connections": pool_connections,
        "signature_version": "s3v4",  # without it presigned URLs can come out as legacy SigV2
        "retries": {"mode": "standard", "max_attempts": 3},
        "connect_timeout": 10,
        "read_timeout": 60,
    }
    if settings.s3_endpoint_url:
        # MinIO, moto and most S3-compatible services have no per-bucket DNS names.
        options["s3"] = {"addressing_style": "path"}
    if session is None:
        session = _aws_session(settings.s3_aws_credentials_block)
    return session.client(
        "s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region, config=Config(**options)
    )


_Key = tuple[int, str | None, str | None, str | None]
_clients: dict[_Key, tuple[Any, S3Client]] = {}
_lock = threading.Lock()


def shared_s3(settings: Settings) -> tuple[Any, S3Client]:
    """This process's boto3 session and client for ``settings``' endpoint, region and credentials block, built on
    first use. The session is the client's credentials chain (``tasks.storage.s3_fast`` signs with it too)."""
    key = (os.getpid(), settings.s3_endpoint_url, settings.s3_region, settings.s3_aws_credentials_block)
    with _lock:
        shared = _clients.get(key)
        if shared is None:
            session = _aws_session(settings.s3_aws_credentials_block)
            client = make_s3_client(settings, pool_connections=POOL_CONNECTIONS, session=session)
            shared = _clients[key] = (session, client)
        return shared


def forget_s3_clients() -> None:
    """Drop every shared client and obstore store (their pools close as they are collected): the next use builds
    new ones, with credentials read again."""
    with _lock:
        _clients.clear()
    forget_fast_puts()
