"""The one clock: ``Clock``, ``utc_now`` and the check that a time is an instant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

import pytest

from bulletin.clock import Clock, require_aware, utc_now
from bulletin.errors import ConfigError, DefinitionError


class _NoOffset(tzinfo):
    """A zone that will not say its offset: as good as naive."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None

    def tzname(self, dt: datetime | None) -> str | None:
        return None


def test_utc_now_is_the_real_time_in_utc() -> None:
    clock: Clock = utc_now
    before = datetime.now(UTC)
    now = clock()
    assert now.tzinfo is UTC
    assert before <= now <= datetime.now(UTC)


def test_an_aware_time_is_returned_as_given() -> None:
    london = datetime(2026, 7, 1, 9, 0, tzinfo=ZoneInfo("Europe/London"))
    assert require_aware(london) is london
    assert require_aware(datetime(2026, 7, 1, tzinfo=timezone(timedelta(hours=-5)))).utcoffset() == timedelta(hours=-5)


@pytest.mark.parametrize("value", [datetime(2026, 7, 1, 9, 0), datetime(2026, 7, 1, 9, 0, tzinfo=_NoOffset())])
def test_a_naive_time_is_refused_naming_what(value: datetime) -> None:
    with pytest.raises(ConfigError, match=r"^the clock passed in must be timezone-aware$"):
        require_aware(value)
    with pytest.raises(ConfigError, match=r"^now must be timezone-aware$") as caught:
        require_aware(value, "now", field="now")
    assert caught.value.field == "now"


def test_a_caller_checking_a_definition_chooses_the_error() -> None:
    with pytest.raises(DefinitionError, match=r"^email dates must be timezone-aware$") as caught:
        require_aware(datetime(2026, 7, 1), "email dates", field="generated_at", error=DefinitionError)
    assert caught.value.field == "generated_at"
