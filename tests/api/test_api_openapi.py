"""Schemathesis against the live app's /openapi.json (uvicorn on loopback): for every operation, generated requests
(valid ones and deliberately invalid ones) never get a 5xx, and every answer matches what the schema documents.

Bounded and deterministic: ``MAX_EXAMPLES`` per operation and mode, Hypothesis derandomised, no example database.
Requests carry a valid admin + cluster-admin API key, so authenticated routes are exercised past the 401, and
``POST /v1/query`` gets a valid data token instead. ``/readyz`` is left out: its 503 when Prefect is down is the
documented answer, and these tests run without a Prefect API.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import FlakyFailure, Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bulletin.store import migrate, open_store
from bulletin.store.api_keys import create_key
from tests.api.v1_support import Api, api_settings, region, serving

MAX_EXAMPLES = 20
SKIPPED = {"/readyz"}
#: Routes whose every status and content type must be documented (status_code_conformance and
#: content_type_conformance too). Every other route is still fuzzed for 5xx and for the schema of the answers it
#: documents.
STRICT = (
    "/healthz",
    "/v1/query",
    "/v1/webhook-endpoints",
    "/v1/webhook-messages",
    "/v1/triggers",
)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, demo_warehouse: Path) -> Iterator[tuple[str, str, str]]:
    """(base URL, API key, data token) of the app on uvicorn, 127.0.0.1, a free port."""
    tmp_path = tmp_path_factory.mktemp("openapi")
    settings_ = api_settings(tmp_path, demo_warehouse)
    with open_store(settings_.database) as store:
        migrate(store)
        _, key = create_key(store, org="acme", role="admin", cluster_admin=True, now=datetime.now(UTC))
    token = Api(client=None, settings=settings_).token([region("EMEA-North")])  # type: ignore[arg-type]
    with serving(settings_, "openapi-fuzz") as url:
        yield url, key, token


def test_no_5xx_and_answers_match_the_schema(live: tuple[str, str, str]) -> None:
    base, key, token = live
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json", timeout=30)
    operations = [result.ok() for result in schema.get_all_operations()]
    fuzzed = [op for op in operations if op.path not in SKIPPED]
    assert {"/v1/query", "/v1/webhook-endpoints", "/v1/triggers"} <= {op.path for op in fuzzed}
    failures: list[str] = []
    for operation in fuzzed:
        credential = f"Bearer {token}" if operation.path == "/v1/query" else f"Bearer {key}"
        checks = [not_a_server_error, response_schema_conformance]
        if operation.path.startswith(STRICT):
            checks += [status_code_conformance, content_type_conformance]
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                fuzz(operation, mode, base, credential, checks)
            except Exception as exc:  # every operation is tried; all failures are reported together
                inner = "; ".join(map(repr, getattr(exc, "exceptions", ())))
                failures.append(f"{operation.label} ({mode.value}): {exc}" + (f" [{inner}]" if inner else ""))
    assert not failures, "\n\n".join(failures)


def fuzz(operation: Any, mode: GenerationMode, base: str, credential: str, checks: list[Any]) -> None:
    """``MAX_EXAMPLES`` generated requests to one operation, each answer validated by ``checks``."""

    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def exercise(case: schemathesis.Case) -> None:
        response = case.call(base_url=base, headers={"authorization": credential}, timeout=30)
        case.validate_response(response, checks=checks)

    try:
        try:
            exercise()
        except FlakyFailure as flaky:
            # The same request failed once and then passed when Hypothesis replayed it: twice seen under load, on
            # the scheduled-events routes, never reproduced alone (issue 11's closing note). The operation is
            # fuzzed again from the start; a failure that comes back is reported with what it was.
            print(f"{operation.label} ({mode.value}) failed once, then passed on replay:", *flaky.exceptions)
            exercise()
    except Unsatisfiable:
        # An operation with no parameters and no body has no invalid request to make.
        if mode is GenerationMode.POSITIVE:
            raise
