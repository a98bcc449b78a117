"""A lane (tasks.delivery.lanes.deliver_from) reports every recipient it is given, whatever fails, and says
which failures a retry may help; an unexpected error is logged for the operator and recorded as an internal error, and
the lane goes on. The pipeline itself is stubbed here: tests/flows run it against real services."""

from __future__ import annotations

import logging
import queue
from typing import Any

import pytest

import tasks.delivery.lanes as deliver
from bulletin.errors import QueryError, TransientError
from bulletin.models import Delivery, DeliveryStatus, Recipient
from bulletin.settings import Settings
from tasks.delivery.registry import Channels


def test_every_recipient_is_reported_and_only_transient_failures_are_marked(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def pipeline(
        plan: Any,
        services: Any,
        recipient: Recipient,
        email: Any,
        keeper: Any,
        claimed: Any = None,
        rendered: Any = None,
    ) -> tuple[Delivery, bool]:
        if recipient.ref == "bug":
            raise KeyError("secret-looking detail")
        if recipient.ref == "slow":
            raise TransientError("the warehouse did not answer")
        if recipient.ref == "refused":
            raise QueryError("no such column")
        if recipient.ref == "half":  # its S3 copy stored, its email deferred: a retry may send the email
            return Delivery(recipient=recipient.ref, status=DeliveryStatus.PARTIAL, error="email: 451"), True
        return Delivery(recipient=recipient.ref, status=DeliveryStatus.DELIVERED), False

    monkeypatch.setattr(deliver, "deliver_attempt", pipeline)
    refs = ("ok", "bug", "slow", "refused", "half", "ok2")
    audience = [Recipient(ref=ref, email=f"{ref}@example.com") for ref in refs]
    todo: queue.SimpleQueue[Any] = queue.SimpleQueue()
    reports: queue.SimpleQueue[Any] = queue.SimpleQueue()
    for index in [*range(len(audience)), None]:
        todo.put(index)
    services: Any = type("Services", (), {"channels": Channels(Settings()), "store": None})()
    plan: Any = type("Plan", (), {"channels": ["s3"]})()
    made = deliver.deliver_from(plan, services, audience, 7, todo, reports, logging.getLogger("lane-test"))
    assert made == 6
    messages = [reports.get() for _ in range(7)]
    assert messages[0] == ("ready", 7)
    got = {audience[index].ref: (d, transient) for _, lane, index, d, transient in messages[1:]}
    assert all(lane == 7 for _, lane, *_ in messages[1:])
    assert got["ok"][0].status is DeliveryStatus.DELIVERED and got["ok2"][0].status is DeliveryStatus.DELIVERED
    assert got["bug"][0].error == "internal error (KeyError)" and got["bug"][1] is False
    assert got["slow"] == (got["slow"][0], True) and got["slow"][0].status is DeliveryStatus.FAILED
    assert got["refused"][0].error == "no such column" and got["refused"][1] is False
    assert got["half"][0].status is DeliveryStatus.PARTIAL and got["half"][1] is True
    assert "delivery to bug failed unexpectedly" in caplog.text
