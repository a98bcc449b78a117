"""pyarrow without pandas: ``keep_pandas_out`` stops pyarrow importing pandas behind a run's back.

pyarrow looks for pandas the first time it converts a Python object (``pa.array([...])``, ``pa.table({...})``):
its lazy pandas shim imports pandas to ask whether the object is a pandas array. pandas is only a dev dependency
here, yet where it is installed that first conversion costs about a second of import (measured with ``python -X
importtime``: the renderers' first ``pa.array`` pulled in pandas, numpy's extras and pandas' own C modules) and
some 40 MB, in every process that renders a file. Nothing in Bulletin hands pyarrow a pandas object.

``keep_pandas_out`` makes that first lookup answer "no pandas": for one tiny conversion an import hook refuses
``import pandas`` (ImportError, as if it were not installed), then it is removed. pyarrow remembers the answer for
lookups (so converting a list never imports pandas again) but still imports pandas when asked for it outright:
``Table.to_pandas()`` keeps working, in the benchmarks' baselines for instance. If pandas is already imported the
process wants it, and nothing is changed.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

import pyarrow as pa

_lock = threading.Lock()
_done = False


def keep_pandas_out() -> None:
    """Have pyarrow settle, once per process, that pandas is not there for its object conversions."""
    global _done
    with _lock:
        if _done:
            return
        _done = True
        if "pandas" in sys.modules:
            return
        refuse = _RefusePandas()
        sys.meta_path.insert(0, refuse)
        try:
            pa.array([0])  # pyarrow's first look for pandas happens here, and fails
        finally:
            sys.meta_path.remove(refuse)


class _RefusePandas:
    """An import hook that says pandas is not installed. (``sys.modules["pandas"] = None`` would not do: pyarrow's
    compiled import takes the None for the module.)"""

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
