from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bulletin.schedules import check_cron, is_slot, next_run, next_runs, preset_to_cron, preview_runs, schedule_period
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


NEW_YORK = "America/New_York"


@pytest.mark.parametrize(
    ("cron", "period"),
    [
        ("* * * * *", timedelta(minutes=1)),
        ("0 * * * *", timedelta(hours=1)),
        ("*/15 9-17 * * *", timedelta(minutes=15)),
        ("0 9,17 * * *", timedelta(hours=8)),
        ("0 7 * * *", timedelta(days=1)),
        ("0 7 * * 1-5", timedelta(days=1)),
        ("0 7 * * 1", timedelta(days=7)),
        ("0 9 1 * *", timedelta(days=28)),
    ],
)
def test_schedule_period_is_the_shortest_wall_clock_gap(cron: str, period: timedelta) -> None:
    assert schedule_period(cron) == period


def test_is_slot_tells_the_two_fall_back_hours_apart() -> None:
    # 2026-11-01, New York: 01:00 EDT (05:00Z), then clocks go back and 01:00 EST (06:00Z) comes again.
    assert is_slot("0 * * * *", NEW_YORK, datetime(2026, 11, 1, 5, tzinfo=UTC))
    assert is_slot("0 * * * *", NEW_YORK, datetime(2026, 11, 1, 6, tzinfo=UTC))
    assert not is_slot("0 * * * *", NEW_YORK, datetime(2026, 11, 1, 5, 30, tzinfo=UTC))
    second = datetime(2026, 11, 1, 6, tzinfo=UTC).astimezone(ZoneInfo(NEW_YORK))
    assert second.fold == 1 and is_slot("0 * * * *", NEW_YORK, second)
    assert is_slot("0 7 * * *", NEW_YORK, datetime(2026, 1, 5, 12, tzinfo=UTC))
    assert not is_slot("0 7 * * *", NEW_YORK, datetime(2026, 1, 5, 11, tzinfo=UTC))


def test_next_run_across_both_dst_changes() -> None:
    spring = next_run("0 7 * * *", NEW_YORK, after=datetime(2026, 3, 7, 12, tzinfo=UTC))
    assert spring is not None and spring.astimezone(UTC) == datetime(2026, 3, 8, 11, tzinfo=UTC)
    after_fall = next_run("0 * * * *", NEW_YORK, after=datetime(2026, 11, 1, 5, tzinfo=UTC))
    assert after_fall is not None and after_fall.astimezone(UTC) == datetime(2026, 11, 1, 6, tzinfo=UTC)


def test_preview_marks_dst_changes() -> None:
    runs = preview_runs("0 7 * * *", NEW_YORK, after=datetime(2026, 10, 30, tzinfo=UTC), count=4)
    assert [r.utc.hour for r in runs] == [11, 11, 12, 12]
    assert [r.local.hour for r in runs] == [7, 7, 7, 7]
    assert [r.dst_change for r in runs] == [False, False, True, False]
    assert [r.zone_abbreviation for r in runs] == ["EDT", "EDT", "EST", "EST"]
    assert [r.utc_offset for r in runs] == ["-04:00", "-04:00", "-05:00", "-05:00"]
    spring = preview_runs("30 2 * * *", NEW_YORK, after=datetime(2026, 3, 7, 12, tzinfo=UTC), count=2)
    # 02:30 does not exist on 2026-03-08: the run is at 03:00 EDT, then 02:30 EDT again.
    assert [r.local.strftime("%m-%d %H:%M %Z") for r in spring] == ["03-08 03:00 EDT", "03-09 02:30 EDT"]
    assert spring[0].dst_change and not spring[1].dst_change
    kolkata = preview_runs("0 7 * * *", "Asia/Kolkata", after=datetime(2026, 1, 1, tzinfo=UTC), count=1)
    assert kolkata[0].utc_offset == "+05:30" and kolkata[0].utc.strftime("%H:%M") == "01:30"
