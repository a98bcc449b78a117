"""A recipient's ``locale`` and ``timezone`` attributes: their PDF, XLSX Summary and email write numbers, dates and
the generation time their way; a wrong one fails that recipient alone, with a reason. Real services: the demo
warehouse (DuckDB), the local bucket, the email outbox and a SQLite ledger; files read back with pypdf, openpyxl and
the standard library's email parser."""

from __future__ import annotations

import email
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from urllib.parse import unquote, urlparse

import duckdb
import openpyxl
import pytest
from pypdf import PdfReader

from bulletin.demo_data import DEMO_END_DATE
from bulletin.models import Delivery, DeliveryStatus, Recipient
from bulletin.period import Period, period_label, report_period
from bulletin.reports import get_report, resolve_parameters
from bulletin.settings import Settings
from tasks.delivery.deliver import deliver_recipient
from tasks.delivery.plan import DeliveryPlan
from tasks.delivery.services import DeliveryServices
from tests.tasks.delivery.test_registry import plan_for

REGION = "EMEA-North"


@pytest.fixture
def settings(tmp_path: Path, demo_warehouse: Path) -> Settings:
    state = tmp_path / "state" / "bulletin.db"
    return Settings(home=tmp_path / "home", warehouse_url=str(demo_warehouse), database_url=f"sqlite:///{state}")


def weekly_plan(settings: Settings) -> DeliveryPlan:
    report = get_report(settings.reports_dir, "weekly-regional-sales")
    params = resolve_parameters(report, {"as_of": DEMO_END_DATE.isoformat()}, DEMO_END_DATE)
    base = plan_for(settings, ["s3", "email"])
    week = report_period(report, params)
    return replace(base, report=report, params=params, formats=["pdf", "xlsx"], channels=["s3", "email"], period=week)


def manager(ref: str, **attributes: str) -> Recipient:
    return Recipient(ref=ref, email=f"{ref}@example.com", name=ref, attributes={"region": REGION, **attributes})


def region_total(warehouse: Path) -> Decimal:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        row = con.execute(
            "SELECT sum(amount) FROM sales WHERE region = ? AND order_date BETWEEN ? AND ?",
            [REGION, DEMO_END_DATE - timedelta(days=6), DEMO_END_DATE],
        ).fetchone()
    assert row is not None
    return Decimal(row[0])


def stored(delivery: Delivery, fmt: str) -> Path:
    (artifact,) = [a for a in delivery.artifacts if a.channel == "s3" and a.format == fmt]
    return Path(unquote(urlparse(artifact.uri).path))


def message(settings: Settings, ref: str) -> EmailMessage:
    (path,) = [p for p in settings.outbox_path.glob("*.eml") if f"{ref}@example.com" in p.read_text("utf-8")]
    parsed = email.message_from_bytes(path.read_bytes(), policy=default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def body(msg: EmailMessage, subtype: str) -> str:
    part = msg.get_body((subtype,))
    assert part is not None
    return str(part.get_content()).replace("\xa0", " ")


def test_a_german_reader_gets_german_numbers_dates_and_time(
    settings: Settings, services: DeliveryServices, demo_warehouse: Path
) -> None:
    services = replace(services, clock=lambda: datetime(2026, 11, 2, 6, 30, tzinfo=UTC))
    delivery = deliver_recipient(
        weekly_plan(settings), services, manager("rm-de", locale="de-DE", timezone="Europe/Berlin")
    )
    assert delivery.status is DeliveryStatus.DELIVERED, delivery.error
    total = region_total(demo_warehouse)
    german = f"{total:,.2f}".replace(",", " ").replace(".", ",").replace(" ", ".")  # 15.352.124,16
    pdf = "".join(page.extract_text() for page in PdfReader(stored(delivery, "pdf")).pages).replace("\xa0", " ")
    assert "02.11.2026, 07:30:00 CET (Europe/Berlin, UTC+01:00)" in pdf  # the generation time, in Berlin
    week = Period(DEMO_END_DATE - timedelta(days=6), DEMO_END_DATE)
    assert period_label(week, "de-DE") in pdf  # the period, as "25.–31. Okt. 2026"
    assert f"\n{german} €\n" in pdf.split("\nTotal\n")[-1]  # the totals row, the currency after the number
    summary = openpyxl.load_workbook(stored(delivery, "xlsx"))["Summary"]
    facts = {row[0]: row[1] for row in summary.iter_rows(min_row=3, max_col=2, values_only=True) if row[0]}
    assert facts["Generated"].startswith("02.11.2026, 07:30:00")
    data = openpyxl.load_workbook(stored(delivery, "xlsx"))["Data"]
    assert data["I2"].number_format == '#,##0.00"\xa0€"'
    assert summary["B" + str(summary.max_row)].number_format == '#,##0.00"\xa0€"'  # the chart's table
    msg = message(settings, "rm-de")
    for text in (body(msg, "plain"), body(msg, "html")):
        assert f"{german} €" in text  # the key figure: the region's total
        assert "02.11.2026, 07:30:00" in text
        chart = text.split("Revenue by product")[-1]
        assert re.search(r"Other \(\d+\)\D*\d{1,3}(\.\d{3})*,\d\d €", chart), "the bars' numbers, in German"


def test_a_reader_without_a_locale_reads_as_before_with_grouped_money(
    settings: Settings, services: DeliveryServices, demo_warehouse: Path
) -> None:
    delivery = deliver_recipient(weekly_plan(settings), services, manager("rm-plain"))
    assert delivery.status is DeliveryStatus.DELIVERED, delivery.error
    total = region_total(demo_warehouse)
    assert f"€{total:,.2f}" in body(message(settings, "rm-plain"), "plain")


@pytest.mark.parametrize(
    ("attributes", "reason"),
    [
        ({"locale": "xx-XX"}, "recipient 'rm-bad': unknown locale 'xx-XX'"),
        ({"timezone": "Mars/Olympus"}, "recipient 'rm-bad': unknown time zone 'Mars/Olympus'"),
    ],
)
def test_a_wrong_locale_or_zone_fails_that_recipient_alone(
    settings: Settings, services: DeliveryServices, attributes: dict[str, str], reason: str
) -> None:
    plan = weekly_plan(settings)
    bad = deliver_recipient(plan, services, manager("rm-bad", **attributes))
    assert bad.status is DeliveryStatus.FAILED
    assert bad.error is not None and reason in bad.error
    good = deliver_recipient(plan, services, manager("rm-good", locale="fr-FR"))
    assert good.status is DeliveryStatus.DELIVERED, good.error
