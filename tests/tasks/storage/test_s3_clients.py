"""One S3 client (one boto3 session, one connection pool) per process, shared by its runs and lanes.

Connections themselves cannot be counted on moto: its server (werkzeug) closes every connection after one response,
so these tests count what the process builds: boto3 sessions, clients and their pools.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest

from tasks.delivery.channels import make_destination
from tasks.storage.s3 import S3Destination
from tasks.storage.s3_clients import POOL_CONNECTIONS, forget_s3_clients, shared_s3
from tests.fixtures.s3 import S3TestBucket, s3_settings

KEY = "weekly/2024/05/01/r-1/weekly-20240501T090000Z-run.csv"
META = {"report": "weekly"}


@pytest.fixture
def sessions(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Every boto3 session built from now on (each client is built from a fresh one)."""
    made: list[Any] = []
    real = boto3.session.Session

    def counting(*args: Any, **kwargs: Any) -> Any:
        made.append(real(*args, **kwargs))
        return made[-1]

    forget_s3_clients()
    monkeypatch.setattr(boto3.session, "Session", counting)
    yield made
    forget_s3_clients()


def test_runs_and_lanes_of_a_process_share_one_client(
    s3_bucket: S3TestBucket, sessions: list[Any], tmp_path: Path
) -> None:
    settings = s3_settings(s3_bucket.endpoint, s3_bucket.name)
    source = tmp_path / "r.csv"
    source.write_bytes(b"a,b\n1,2\n")
    clients = set()

    def lane(run: int, n: int) -> None:
        destination = make_destination(settings)  # as each run's services build it
        assert isinstance(destination, S3Destination)
        destination.put(f"{run}-{n}-{KEY}", source, content_type="text/csv", metadata=META)
        clients.add(id(destination.client))

    for run in range(3):
        with ThreadPoolExecutor(4) as lanes:
            list(lanes.map(lambda n, run=run: lane(run, n), range(8)))
    assert len(clients) == 1
    assert len(sessions) == 1
    assert s3_bucket.client.get_object(Bucket=s3_bucket.name, Key=f"2-7-{KEY}")["Body"].read() == b"a,b\n1,2\n"
    assert (
        shared_s3(settings)[1].meta.config.max_pool_connections == POOL_CONNECTIONS >= 4
    )  # a run's lanes never wait for one


def test_other_settings_and_forked_processes_get_their_own(
    s3_bucket: S3TestBucket, sessions: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = shared_s3(s3_settings(s3_bucket.endpoint, s3_bucket.name))[1]
    assert shared_s3(s3_settings(s3_bucket.endpoint, "other-bucket"))[1] is first  # same endpoint
    assert shared_s3(s3_settings(s3_bucket.endpoint, "b-1", s3_region="eu-west-1"))[1] is not first
    monkeypatch.setattr(os, "getpid", lambda: -1)  # as in a child after fork: the parent's pool is not shared
    assert shared_s3(s3_settings(s3_bucket.endpoint, s3_bucket.name))[1] is not first
    assert len(sessions) == 3
