"""pandas stays out of a run: importing the flow and rendering every format never imports it (tasks/arrow.py),
while a caller that asks pyarrow for pandas outright still gets it. Each check runs in a fresh interpreter: the test
session itself may have imported pandas long before."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

RENDER_EVERY_FORMAT = """
import json, sys
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
import flows.deliver_report  # what a worker imports to run a report
import pyarrow as pa
from tasks.render import ChartData, RenderContext, open_writer

batch = pa.record_batch(
    {
        "region": ["EMEA", "=cmd", None],
        "day": [date(2026, 1, 1), date(2026, 1, 2), None],
        "amount": pa.array([Decimal("1.50"), Decimal("2.25"), None], pa.decimal128(10, 2)),
        "n": [1, 2, 3],
    }
)
ctx = RenderContext(
    report_id="r", title="T", description="d", recipient="Ana", scope="region = EMEA",
    generated_at=datetime(2026, 1, 3, 7, tzinfo=timezone.utc), timezone="UTC",
    chart=ChartData(
        title="by region", category_label="Region", value_label="Amount", categories=["EMEA"], values=[1.5]
    ),
)
rows = {}
for fmt in ("xlsx", "csv", "pdf"):
    writer = open_writer(fmt, Path(sys.argv[1]) / f"out.{fmt}", batch.schema, ctx)
    writer.write_batch(batch)
    rows[fmt] = writer.close()
print(json.dumps({"rows": rows, "pandas": "pandas" in sys.modules}))
"""


def _python(code: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_importing_the_flow_and_rendering_every_format_never_imports_pandas(tmp_path: Path) -> None:
    out = json.loads(_python(RENDER_EVERY_FORMAT, str(tmp_path)))
    assert out["rows"] == {"xlsx": 3, "csv": 3, "pdf": 3}
    assert out["pandas"] is False


def test_pandas_is_still_there_for_whoever_asks_pyarrow_for_it() -> None:
    out = _python(
        """
        import sys
        import tasks.render  # keeps pandas out of pyarrow's own look-ups
        import pyarrow as pa
        assert "pandas" not in sys.modules
        pa.array(["a"]); pa.table({"x": [1]})
        assert "pandas" not in sys.modules
        frame = pa.table({"x": [1, 2]}).to_pandas()
        print(type(frame).__module__.split(".")[0], list(frame["x"]))
        """
    )
    assert out.split() == ["pandas", "[1,", "2]"]
