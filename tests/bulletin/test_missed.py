"""The missed-run policy (bulletin/missed.py): pure decisions with the clock passed in, DST and catch_up included,
and the policy fields of a report definition."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from bulletin.errors import DefinitionError
from bulletin.missed import DAILY_TOLERANCE, Verdict, decide_report_run, decide_run, default_tolerance, describe_span
from bulletin.reports import Schedule, load_report_file
from bulletin.settings import PROJECT_ROOT

NY = "America/New_York"
DAILY_7_NY = Schedule(cron="0 7 * * *", timezone=NY)
HOURLY_NY = Schedule(preset="every hour", timezone=NY)
EVERY_MINUTE = Schedule(preset="every minute")
VALID = yaml.safe_load((PROJECT_ROOT / "deployments/reports/daily-account-orders.yaml").read_text())


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("cron", "tolerance"),
    [
        ("* * * * *", timedelta(seconds=60)),
        ("0 * * * *", timedelta(seconds=3600)),
        ("*/10 * * * *", timedelta(minutes=10)),
        ("0 */4 * * *", timedelta(hours=4)),
        ("0 7 * * *", DAILY_TOLERANCE),
        ("0 7 * * 1-5", DAILY_TOLERANCE),
        ("0 7 * * 1", DAILY_TOLERANCE),
        ("0 9 1 * *", DAILY_TOLERANCE),
    ],
)
def test_default_tolerance_is_six_hours_for_daily_and_one_period_for_shorter(cron: str, tolerance: timedelta) -> None:
    assert default_tolerance(cron) == tolerance


def test_a_daily_run_within_six_hours_is_on_time_and_later_is_missed() -> None:
    slot = utc(2026, 1, 5, 12)  # 07:00 EST
    on_time = decide_run(slot, slot + timedelta(hours=2), [DAILY_7_NY])
    assert on_time.verdict is Verdict.ON_TIME and on_time.delivers
    assert decide_run(slot, slot + DAILY_TOLERANCE, [DAILY_7_NY]).delivers  # the boundary itself is still on time
    missed = decide_run(slot, slot + timedelta(hours=6, seconds=1), [DAILY_7_NY])
    assert missed.verdict is Verdict.MISSED and not missed.delivers
    assert missed.tolerance == DAILY_TOLERANCE
    assert "missed: started 6 h 1 s after its slot 2026-01-05T12:00:00Z" in missed.reason
    assert "tolerance of 6 h" in missed.reason and "nothing delivered" in missed.reason


def test_a_slot_days_in_the_past_is_missed_whatever_catch_up_says() -> None:
    slot = utc(2026, 1, 5, 12)
    for catch_up in ("latest", "all"):
        decision = decide_run(slot, slot + timedelta(days=3), [DAILY_7_NY], catch_up=catch_up)
        assert decision.verdict is Verdict.MISSED
        assert "3 d" in decision.reason


def test_explicit_tolerance_overrides_the_default() -> None:
    slot = utc(2026, 1, 5, 12)
    assert decide_run(slot, slot + timedelta(minutes=11), [DAILY_7_NY], tolerance_seconds=600).verdict is Verdict.MISSED
    assert decide_run(slot, slot + timedelta(hours=10), [DAILY_7_NY], tolerance_seconds=12 * 3600).delivers


def test_every_minute_tolerates_one_minute() -> None:
    slot = utc(2026, 5, 1, 9, 30)
    assert decide_run(slot, slot + timedelta(seconds=20), [EVERY_MINUTE]).delivers
    late = decide_run(slot, slot + timedelta(seconds=61), [EVERY_MINUTE])
    assert late.verdict is Verdict.MISSED and late.tolerance == timedelta(seconds=60)


def test_catch_up_latest_runs_only_the_newest_slot_and_all_runs_each() -> None:
    # An hourly report with a tolerance of a day; the worker comes back at 10:20 and starts 08:00, 09:00, 10:00.
    schedules = [Schedule(cron="0 * * * *", timezone="UTC")]
    now = utc(2026, 5, 1, 10, 20)
    day = 86_400
    older = decide_run(utc(2026, 5, 1, 8), now, schedules, tolerance_seconds=day, catch_up="latest")
    assert older.verdict is Verdict.SUPERSEDED and older.newer_slot == utc(2026, 5, 1, 9)
    assert "superseded" in older.reason and "catch_up is 'latest'" in older.reason
    assert decide_run(utc(2026, 5, 1, 9), now, schedules, tolerance_seconds=day).verdict is Verdict.SUPERSEDED
    assert decide_run(utc(2026, 5, 1, 10), now, schedules, tolerance_seconds=day).delivers
    for hour in (8, 9, 10):
        assert decide_run(utc(2026, 5, 1, hour), now, schedules, tolerance_seconds=day, catch_up="all").delivers


def test_superseded_exactly_when_the_next_slot_is_due() -> None:
    slot = utc(2026, 5, 1, 9)
    hourly = [Schedule(cron="0 * * * *", timezone="UTC")]
    assert decide_run(slot, utc(2026, 5, 1, 9, 59, 59), hourly).delivers
    due = decide_run(slot, utc(2026, 5, 1, 10), hourly)
    assert due.verdict is Verdict.SUPERSEDED  # an hour late is within the default tolerance of one period
    assert decide_run(slot, utc(2026, 5, 1, 10, 0, 1), hourly).verdict is Verdict.MISSED  # past it: missed wins


def test_hourly_across_the_fall_back_night() -> None:
    # 2026-11-01 New York: 01:00 EDT is 05:00Z, then 01:00 EST is 06:00Z; both are slots of "every hour".
    first, second = utc(2026, 11, 1, 5), utc(2026, 11, 1, 6)
    assert decide_run(first, utc(2026, 11, 1, 5, 30), [HOURLY_NY]).delivers
    superseded = decide_run(first, second, [HOURLY_NY])
    assert superseded.verdict is Verdict.SUPERSEDED and superseded.newer_slot == second
    assert decide_run(second, utc(2026, 11, 1, 6, 30), [HOURLY_NY]).delivers  # next is 02:00 EST = 07:00Z
    assert decide_run(second, utc(2026, 11, 1, 7), [HOURLY_NY]).verdict is Verdict.SUPERSEDED


def test_daily_across_the_spring_forward_day() -> None:
    # The 07:00 slot is 12:00Z in winter and 11:00Z from 2026-03-08; a DST day never shrinks the tolerance.
    slot = utc(2026, 3, 8, 11)
    assert decide_run(slot, slot + timedelta(hours=5), [DAILY_7_NY]).delivers
    assert decide_run(slot, slot + timedelta(hours=7), [DAILY_7_NY]).verdict is Verdict.MISSED
    assert decide_run(slot, utc(2026, 3, 9, 11), [DAILY_7_NY], tolerance_seconds=2 * 86_400).verdict is (
        Verdict.SUPERSEDED
    )
    assert decide_run(slot, utc(2026, 3, 9, 10, 59), [DAILY_7_NY], tolerance_seconds=2 * 86_400).delivers
    # 02:30 does not exist that day: cron runs at 03:00 EDT (07:00Z), which is that schedule's slot.
    nonexistent = Schedule(cron="30 2 * * *", timezone=NY)
    assert decide_run(utc(2026, 3, 8, 7), utc(2026, 3, 8, 7, 10), [nonexistent]).delivers


def test_with_several_schedules_the_slot_decides_which_one() -> None:
    morning, evening = Schedule(cron="0 7 * * *", timezone=NY), Schedule(cron="0 19 * * *", timezone=NY)
    # The 07:00 slot (12:00Z) starting at 20:00 New York time: the evening slot is no newer slot of *its* schedule.
    decision = decide_run(utc(2026, 1, 5, 12), utc(2026, 1, 6, 1), [morning, evening], tolerance_seconds=86_400)
    assert decision.delivers
    assert decide_run(
        utc(2026, 1, 5, 12), utc(2026, 1, 6, 12), [morning, evening], tolerance_seconds=2 * 86_400
    ).verdict is (Verdict.SUPERSEDED)


def test_several_schedules_take_the_most_lenient_default() -> None:
    # The same 07:00 slot is a slot of both: every minute (60 s) and daily (6 h). The longer tolerance wins.
    slot = utc(2026, 1, 5, 12)
    both = [EVERY_MINUTE, Schedule(cron="0 12 * * *", timezone="UTC")]
    decision = decide_run(slot, slot + timedelta(minutes=5), both, catch_up="all")
    assert decision.delivers and decision.tolerance == DAILY_TOLERANCE


def test_a_slot_of_no_schedule_and_no_schedules_at_all() -> None:
    # A slot that matches no schedule (the schedule changed since Prefect planned it): all schedules count.
    odd = utc(2026, 1, 5, 12, 17)
    assert decide_run(odd, odd + timedelta(hours=1), [DAILY_7_NY]).delivers
    assert decide_run(odd, odd + timedelta(hours=7), [DAILY_7_NY]).verdict is Verdict.MISSED
    assert decide_run(odd, odd + timedelta(hours=5), []).delivers
    assert decide_run(odd, odd + timedelta(hours=7), []).tolerance == DAILY_TOLERANCE


def test_aware_times_in_any_zone_compare_as_instants() -> None:
    slot_local = datetime(2026, 1, 5, 7, tzinfo=ZoneInfo(NY))
    decision = decide_run(slot_local, utc(2026, 1, 5, 13), [DAILY_7_NY])
    assert decision.delivers and decision.slot == utc(2026, 1, 5, 12)


def test_describe_span() -> None:
    assert describe_span(timedelta(seconds=45)) == "45 s"
    assert describe_span(timedelta(minutes=12)) == "12 min"
    assert describe_span(timedelta(minutes=12, seconds=5)) == "12 min 5 s"
    assert describe_span(timedelta(hours=6)) == "6 h"
    assert describe_span(timedelta(days=2, hours=3, seconds=9)) == "2 d 3 h"
    assert describe_span(timedelta(seconds=-3)) == "0 s"


def write_report(tmp_path: Path, **changes: object) -> Path:
    path = tmp_path / "daily-account-orders.yaml"
    path.write_text(yaml.safe_dump({**VALID, **changes}))
    return path


def test_report_policy_defaults_and_values(tmp_path: Path) -> None:
    report = load_report_file(write_report(tmp_path))
    assert report.tolerance_seconds is None and report.catch_up == "latest"
    custom = load_report_file(write_report(tmp_path, tolerance_seconds=900, catch_up="all"))
    assert custom.tolerance_seconds == 900 and custom.catch_up == "all"
    slot = utc(2026, 1, 5, 11, 30)  # daily at 06:30 New York
    assert decide_report_run(custom, slot, slot + timedelta(minutes=16)).verdict is Verdict.MISSED
    assert decide_report_run(report, slot, slot + timedelta(minutes=16)).delivers


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"tolerance_seconds": 0}, "tolerance_seconds", "greater than or equal to 1"),
        ({"tolerance_seconds": -60}, "tolerance_seconds", "greater than or equal to 1"),
        ({"tolerance_seconds": "six hours"}, "tolerance_seconds", "valid integer"),
        ({"catch_up": "some"}, "catch_up", "'latest' or 'all'"),
        ({"timezone": "Europe/Atlantis"}, "timezone", "unknown time zone"),
        (
            {"schedule": [{"preset": "daily at 07:00", "timezone": NY}, {"cron": "0 25 * * *"}]},
            "schedule",
            "invalid cron expression '0 25 * * *'",
        ),
        ({"schedule": {"cron": "0 7 * *"}}, "schedule", "must have 5 fields"),
        ({"schedule": {"preset": "daily at 25:00"}}, "schedule", "unknown schedule preset"),
        ({"schedule": {"cron": "0 7 * * *", "timezone": "EST5EDT-nope"}}, "schedule", "unknown time zone"),
    ],
)
def test_bad_policy_cron_or_zone_is_refused_on_load(tmp_path: Path, changes: dict, field: str, reason: str) -> None:
    path = write_report(tmp_path, **changes)
    with pytest.raises(DefinitionError) as info:
        load_report_file(path)
    message = str(info.value)
    assert str(path) in message and field in message and reason in message
