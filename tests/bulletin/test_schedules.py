from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bulletin.schedules import check_cron, next_runs, preset_to_cron
from bulletin.templating import TemplateError, render_value


@pytest.mark.parametrize(
    ("preset", "cron"),
    [
        ("every minute", "* * * * *"),
        ("every hour", "0 * * * *"),
        ("daily at 07:00", "0 7 * * *"),
        ("Weekdays at 6:30", "30 6 * * 1-5"),
        ("weekly on friday at 17:45", "45 17 * * 5"),
        ("monthly on day 1 at 09:00", "0 9 1 * *"),
    ],
)
def test_presets(preset: str, cron: str) -> None:
    assert preset_to_cron(preset) == cron
    check_cron(cron)


def test_daily_new_york_follows_dst() -> None:
    winter = next(iter(next_runs("0 7 * * *", "America/New_York", after=datetime(2026, 1, 10, tzinfo=UTC), count=1)))
    summer = next(iter(next_runs("0 7 * * *", "America/New_York", after=datetime(2026, 7, 10, tzinfo=UTC), count=1)))
    assert winter.astimezone(UTC).hour == 12
    assert summer.astimezone(UTC).hour == 11


@pytest.mark.parametrize("bad", ["* * * *", "61 * * * *", "0 7 * * 8", "every day"])
def test_bad_cron(bad: str) -> None:
    with pytest.raises(ValueError, match="cron"):
        check_cron(bad)


def test_templates_keep_types_and_refuse_unknowns() -> None:
    ctx = {"recipient": {"regions": ["A", "B"], "region": "A"}, "params": {}}
    assert render_value("{{ recipient.regions }}", ctx) == ["A", "B"]
    assert render_value("plain", ctx) == "plain"
    with pytest.raises(TemplateError):
        render_value("{{ recipient.missing }}", ctx)
    with pytest.raises(TemplateError):
        render_value("{{ __import__('os') }}", ctx)
    with pytest.raises(TemplateError):
        render_value("{{ recipient.region - 1d }}", ctx)
