"""The query engine and the warehouse it reads: compiled queries (``query``) run by a DuckDB file
(``embedded``) or any SQLAlchemy URL (``sql``), which share the types of ``base``.

This ``__init__`` lists what other packages use. Modules that import Prefect, boto3 or paramiko are
imported from their own module, so importing this package stays cheap.
"""

from __future__ import annotations

from tasks.warehouse.base import StreamResult
from tasks.warehouse.embedded import Warehouse
from tasks.warehouse.query import read_audience, run_aggregate, run_query

__all__ = ["StreamResult", "Warehouse", "read_audience", "run_aggregate", "run_query"]
