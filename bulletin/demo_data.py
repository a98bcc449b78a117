"""The demo warehouse: a DuckDB file with two years of sales, its customers, and the report audiences.

Deterministic: the same row count and end date give the same rows every time. Randomness comes from an integer hash
written in SQL (not DuckDB's ``hash()`` or ``random()``, whose output may change between versions or depend on
threads), so the whole build is a few set-based statements: about a second for 1.2M rows on two cores.

The sales end yesterday unless told otherwise: the day the reports' ``as_of: yesterday`` names, so a demo built today
shows last week's sales and every demo report has rows. Tests pass a fixed ``end_date`` (``DEMO_END_DATE``).

The build writes a temporary file and renames it into place, so a reader never sees a half-built warehouse.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb

from bulletin.errors import ConfigError, TransientError

#: The fixed last day tests build with, so the dates they expect hold whenever they run.
DEMO_END_DATE = date(2026, 10, 31)
DEMO_ROWS = 1_200_000
DEMO_DAYS = 730  # two years, ending on end_date
#: Bumped whenever the tables change, so `demo_warehouse_ready` rebuilds an old file.
DEMO_SCHEMA_VERSION = "1"
META_TABLE = "bulletin_demo"

REGIONS: dict[str, tuple[str, ...]] = {
    "EMEA-North": ("United Kingdom", "Ireland", "Sweden", "Norway", "Denmark"),
    "EMEA-South": ("Spain", "Italy", "Portugal", "Greece"),
    "AMER-East": ("United States", "Canada"),
    "AMER-West": ("United States", "Canada"),
    "LATAM": ("Brazil", "Mexico", "Argentina", "Chile"),
    "APAC": ("Japan", "Australia", "Singapore", "India", "South Korea", "New Zealand"),
}
CUSTOMERS = 200  # one account each: ACC-0001 .. ACC-0200
_NAME_STEMS = (
    "Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Wonka", "Tyrell", "Cyberdyne", "Soylent",
    "Hooli", "Vandelay", "Northwind", "Pied Piper", "Aperture", "Black Mesa", "Oscorp", "Contoso", "Monarch",
    "Nakatomi",
)  # fmt: skip
_NAME_SUFFIXES = (
    "Trading", "Foods", "Logistics", "Systems", "Retail", "Labs", "Holdings", "Partners", "Supplies", "Media",
)  # fmt: skip
#: Real-looking names that exercise the renderers: quotes, commas, accents, and leading @/+ (CSV formula injection).
_SPECIAL_NAMES = {
    7: "O'Brien & Sons, Ltd.",
    13: "Müller Präzision GmbH",
    19: "Café Olé S.A.",
    23: "@Home Interiors",
    29: "+Plus Logistics",
}
_SEGMENTS = ("Enterprise", "Mid-market", "SMB")

#: (product, category, list price)
PRODUCTS: tuple[tuple[str, str, float], ...] = (
    ("Laptop Pro 14", "Hardware", 1899.0), ("Laptop Air 13", "Hardware", 1199.0),
    ("Desktop Tower", "Hardware", 1499.0), ("Mini PC", "Hardware", 649.0), ("Tablet 11", "Hardware", 599.0),
    ("Monitor 27 4K", "Hardware", 429.0), ("Monitor 34 Ultrawide", "Hardware", 749.0),
    ("Office Suite", "Software", 149.0), ("Design Studio", "Software", 599.0),
    ("Antivirus Plus", "Software", 49.0), ("Backup Manager", "Software", 89.0),
    ("Database Server", "Software", 2499.0), ("Analytics Cloud", "Software", 990.0),
    ("Onboarding Workshop", "Services", 1200.0), ("Support Gold", "Services", 2400.0),
    ("Support Silver", "Services", 1200.0), ("Migration Package", "Services", 3500.0),
    ("Training Day", "Services", 800.0), ("Health Check", "Services", 950.0),
    ("Wireless Mouse", "Accessories", 29.0), ("Mechanical Keyboard", "Accessories", 119.0),
    ("USB-C Dock", "Accessories", 199.0), ("Headset Pro", "Accessories", 159.0), ("Webcam HD", "Accessories", 79.0),
    ("Laptop Sleeve", "Accessories", 35.0), ("Docking Cable", "Accessories", 19.0),
    ("Router AX", "Networking", 249.0), ("Switch 24-port", "Networking", 399.0),
    ("Access Point", "Networking", 179.0), ("Firewall Appliance", "Networking", 1299.0),
    ("Mesh Kit", "Networking", 329.0), ("Patch Cable Pack", "Networking", 25.0),
    ("NAS 4-bay", "Storage", 549.0), ("SSD 2TB", "Storage", 169.0), ("HDD 8TB", "Storage", 189.0),
    ("Backup Appliance", "Storage", 2199.0), ("Cloud Storage 1TB", "Storage", 99.0),
    ("USB Drive 256GB", "Storage", 29.0), ("SAN Shelf", "Storage", 8900.0), ("Tape Library", "Storage", 5400.0),
)  # fmt: skip

#: (ref, email, name, org, region): every region covered, two with a second manager.
REGIONAL_MANAGERS = (
    ("rm-emea-north", "ana.lima@example.com", "Ana Lima", "acme", "EMEA-North"),
    ("rm-emea-south", "marco.rossi@example.com", "Marco Rossi", "acme", "EMEA-South"),
    ("rm-amer-east", "dana.whitfield@example.com", "Dana Whitfield", "acme", "AMER-East"),
    ("rm-amer-west", "chloe.martin@example.com", "Chloé Martin", "acme", "AMER-West"),
    ("rm-latam", "joao.silva@example.com", "João Silva", "acme", "LATAM"),
    ("rm-apac", "kenji.sato@example.com", "Kenji Sato", "acme", "APAC"),
    ("rm-emea-north-2", "sven.olsen@example.org", "Sven Olsen", "globex", "EMEA-North"),
    ("rm-apac-2", "priya.nair@example.org", "Priya Nair", "globex", "APAC"),
)
#: How each regional manager reads numbers, dates and times (their ``locale`` and ``timezone`` attributes).
MANAGER_LOCALES = {
    "rm-emea-north": ("en-GB", "Europe/London"),
    "rm-emea-south": ("it-IT", "Europe/Rome"),
    "rm-amer-east": ("en-US", "America/New_York"),
    "rm-amer-west": ("en-US", "America/Los_Angeles"),
    "rm-latam": ("pt-BR", "America/Sao_Paulo"),
    "rm-apac": ("ja-JP", "Asia/Tokyo"),
    "rm-emea-north-2": ("de-DE", "Europe/Berlin"),
    "rm-apac-2": ("en-IN", "Asia/Kolkata"),
}
#: (ref, email, name, org, account_id)
ACCOUNT_MANAGERS = (
    ("am-acc-0001", "liam.walsh@example.com", "Liam Walsh", "acme", "ACC-0001"),
    ("am-acc-0002", "emma.jones@example.com", "Emma Jones", "acme", "ACC-0002"),
    ("am-acc-0003", "noah.kim@example.com", "Noah Kim", "acme", "ACC-0003"),
    ("am-acc-0007", "olivia.brown@example.com", "Olivia Brown", "acme", "ACC-0007"),
    ("am-acc-0013", "lukas.weber@example.org", "Lukas Weber", "globex", "ACC-0013"),
    ("am-acc-0023", "sofia.garcia@example.org", "Sofía García", "globex", "ACC-0023"),
    ("am-acc-0042", "yuki.tanaka@example.org", "Yuki Tanaka", "globex", "ACC-0042"),
    ("am-acc-0150", "aisha.khan@example.com", "Aisha Khan", "acme", "ACC-0150"),
)
#: Rows pinned to end_date: every customer twice, so each account (and so each region) has orders on the last day.
_PINNED_ROWS = 2 * CUSTOMERS
MIN_ROWS = 1_000


@dataclass(frozen=True)
class WarehouseInfo:
    """What was built."""

    path: Path
    rows: int
    start_date: date
    end_date: date
    customers: int
    bytes: int


def customer_rows() -> list[tuple[int, str, str, str, str, str]]:
    """(customer_id, customer_name, account_id, region, country, segment) for every demo customer."""
    regions = list(REGIONS)
    rows = []
    for cid in range(1, CUSTOMERS + 1):
        region = regions[(cid - 1) % len(regions)]
        countries = REGIONS[region]
        stem = _NAME_STEMS[(cid - 1) % len(_NAME_STEMS)]
        suffix = _NAME_SUFFIXES[(cid - 1) // len(_NAME_STEMS) % len(_NAME_SUFFIXES)]
        name = _SPECIAL_NAMES.get(cid, f"{stem} {suffix}")
        country = countries[(cid // len(regions)) % len(countries)]
        rows.append((cid, name, f"ACC-{cid:04d}", region, country, _SEGMENTS[cid % len(_SEGMENTS)]))
    return rows


# mix32 is the "hash32" integer finaliser (two xor-shift-multiply rounds), kept inside 64-bit arithmetic: inputs
# are reduced mod 2^32 and the multiplier is below 2^27, so nothing overflows BIGINT. rnd(h, salt) is uniform [0, 1).
_MACROS = """
CREATE TEMP MACRO mix_round(x) AS (xor(x >> 16, x) * 73244475) % 4294967296;
CREATE TEMP MACRO mix32(x) AS xor(mix_round(mix_round((x) % 4294967296)) >> 16,
                                  mix_round(mix_round((x) % 4294967296)));
CREATE TEMP MACRO rnd(h, salt) AS mix32(h + salt * 40503) / 4294967296.0;
"""

_SALES = """
CREATE TABLE sales AS
WITH base AS (
    SELECT range AS i, mix32(range) AS h FROM range($rows)
), picked AS (
    SELECT
        i,
        -- The first rows pin every customer to end_date and one row to the first day; the rest favour low ids (a
        -- few big customers) and recent days (daily volume doubles over the two years: the inverse CDF of a
        -- density rising linearly from 1 to 2), which makes the charts worth looking at.
        CASE WHEN i < $pinned THEN i % $customers + 1
             ELSE 1 + least($customers - 1, floor($customers * pow(rnd(h, 1), 1.6)))::INTEGER END AS customer_id,
        CASE WHEN i < $pinned THEN $days - 1
             WHEN i = $pinned THEN 0
             ELSE least($days - 1, floor($days * (sqrt(1 + 3 * rnd(h, 2)) - 1)))::INTEGER END AS day_offset,
        least($products - 1, floor($products * rnd(h, 3)))::INTEGER + 1 AS product_no,
        1 + floor(12 * pow(rnd(h, 4), 2))::INTEGER AS quantity,
        0.9 + 0.2 * rnd(h, 5) AS price_factor
    FROM base
)
SELECT
    row_number() OVER (ORDER BY p.day_offset, p.i)::BIGINT AS order_id,
    ($start::DATE + p.day_offset)::DATE AS order_date,
    c.region, c.country, pr.product, pr.category,
    c.customer_id, c.customer_name, c.account_id,
    p.quantity::INTEGER AS quantity,
    round(pr.list_price * p.price_factor, 2)::DECIMAL(10, 2) AS unit_price,
    (p.quantity * round(pr.list_price * p.price_factor, 2))::DECIMAL(12, 2) AS amount
FROM picked AS p
JOIN customers AS c USING (customer_id)
JOIN products AS pr ON pr.product_no = p.product_no
ORDER BY order_id
"""

_ORDERS_VIEW = """
CREATE VIEW orders AS
SELECT order_id, order_date, account_id, customer_name, product, quantity, amount FROM sales
"""


def _build(con: duckdb.DuckDBPyConnection, rows: int, start: date) -> None:
    con.execute("SET enable_progress_bar = false")  # DuckDB would draw it on the terminal under the CLI's own
    con.execute(_MACROS)
    con.execute(
        "CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, customer_name VARCHAR NOT NULL, "
        "account_id VARCHAR NOT NULL UNIQUE, region VARCHAR NOT NULL, country VARCHAR NOT NULL, segment VARCHAR)"
    )
    con.executemany("INSERT INTO customers VALUES (?, ?, ?, ?, ?, ?)", customer_rows())
    con.execute("CREATE TEMP TABLE products (product_no INTEGER, product VARCHAR, category VARCHAR, list_price DOUBLE)")
    con.executemany("INSERT INTO products VALUES (?, ?, ?, ?)", [(n, *p) for n, p in enumerate(PRODUCTS, start=1)])
    params = {
        "rows": rows,
        "pinned": _PINNED_ROWS,
        "customers": CUSTOMERS,
        "days": DEMO_DAYS,
        "products": len(PRODUCTS),
        "start": start.isoformat(),
    }
    con.execute(_SALES, params)
    con.execute(_ORDERS_VIEW)
    con.execute(
        "CREATE TABLE regional_managers (ref VARCHAR PRIMARY KEY, email VARCHAR NOT NULL, name VARCHAR, "
        "org VARCHAR, region VARCHAR NOT NULL, locale VARCHAR, timezone VARCHAR)"
    )
    managers = [(*row, *MANAGER_LOCALES.get(row[0], (None, None))) for row in REGIONAL_MANAGERS]
    con.executemany("INSERT INTO regional_managers VALUES (?, ?, ?, ?, ?, ?, ?)", managers)
    con.execute(
        "CREATE TABLE account_managers (ref VARCHAR PRIMARY KEY, email VARCHAR NOT NULL, name VARCHAR, "
        "org VARCHAR, account_id VARCHAR NOT NULL)"
    )
    con.executemany("INSERT INTO account_managers VALUES (?, ?, ?, ?, ?)", list(ACCOUNT_MANAGERS))
    con.execute(f"CREATE TABLE {META_TABLE} (key VARCHAR PRIMARY KEY, value VARCHAR)")
    meta = {"schema_version": DEMO_SCHEMA_VERSION, "rows": str(rows), "end_date": (start + timedelta(DEMO_DAYS - 1))}
    con.executemany(f"INSERT INTO {META_TABLE} VALUES (?, ?)", [(k, str(v)) for k, v in meta.items()])  # noqa: S608
    con.execute("CHECKPOINT")


def yesterday(today: date | None = None) -> date:
    """The day before ``today`` (default: this machine's local date, as the report runs' ``yesterday``)."""
    return (today or date.today()) - timedelta(days=1)


def build_demo_warehouse(path: Path, *, rows: int = DEMO_ROWS, end_date: date | None = None) -> WarehouseInfo:
    """Build (or rebuild) the demo DuckDB file at ``path``, its sales ending on ``end_date`` (default: yesterday).
    The same arguments give the same rows."""
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < MIN_ROWS:
        raise ConfigError(f"the demo warehouse needs at least {MIN_ROWS} rows")
    end_date = end_date or yesterday()
    start = end_date - timedelta(days=DEMO_DAYS - 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.building")
    for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
        leftover.unlink(missing_ok=True)
    try:
        with duckdb.connect(str(tmp)) as con:
            _build(con, rows, start)
        # A WAL left beside the old file would be replayed onto the new one.
        path.with_name(path.name + ".wal").unlink(missing_ok=True)
        os.replace(tmp, path)
    except duckdb.Error as exc:
        raise TransientError(f"building the demo warehouse at {path} failed: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_name(tmp.name + ".wal").unlink(missing_ok=True)
    return WarehouseInfo(path, rows, start, end_date, CUSTOMERS, path.stat().st_size)


def demo_warehouse_ready(path: Path, *, through: date | None = None) -> bool:
    """Whether ``path`` holds a complete demo warehouse of the current schema version, with sales up to
    ``through`` when given (a warehouse built last month has none for yesterday: rebuild it)."""
    meta = _meta(path)
    if meta.get("schema_version") != DEMO_SCHEMA_VERSION:
        return False
    end = _end_date(meta)
    return through is None or (end is not None and end >= through)


def demo_end_date(path: Path) -> date | None:
    """The last day of sales in the demo warehouse at ``path``; None if it is not a demo warehouse."""
    return _end_date(_meta(path))


def _end_date(meta: dict[str, str]) -> date | None:
    try:
        return date.fromisoformat(meta["end_date"])
    except (KeyError, ValueError):
        return None


def _meta(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            rows = con.execute(f"SELECT key, value FROM {META_TABLE}").fetchall()  # noqa: S608
    except duckdb.Error:
        return {}
    return {str(key): str(value) for key, value in rows}
