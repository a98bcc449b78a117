"""Rows of the XLSX data sheet joined from pieces: literal text and Arrow string arrays, in one kernel per batch.

Why one join: ``pc.binary_join_element_wise`` costs about the same per argument per row whatever the argument,
literal or array. Joining each column's cells and then each row again cost three times what one join over every
piece of the row costs (docs/benchmarks.md, "XLSX cell building"). So the pieces are as few as can be: adjacent
literals are merged, and the row numbers that every cell repeats (``<c r="B17"``) come with the literals around
them from arrays made once per process (:class:`RowPieces`), since every file's first rows are numbered alike.
"""

from __future__ import annotations

import functools

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["SLICE_ROWS", "Pieces", "join_pieces", "row_numbers"]

SLICE_ROWS = 8_192  # rows turned into XML at once: bounds the transient strings whatever the batch size
_COUNTING = pa.array(range(SLICE_ROWS), pa.int64())
_FIRST_ROWS = pc.add(_COUNTING, 2).cast(pa.string())  # row 1 is the header
_NOTHING = pa.scalar("", pa.string())
_CACHE_BYTES = 16 << 20

Pieces = list[str | pa.Array]  # literal text and arrays whose row-wise concatenation is each row's XML


def row_numbers(first_row: int, count: int) -> pa.Array:
    """Sheet row numbers ``first_row`` .. as strings; a file's first slice is numbered from the process's copy."""
    if first_row == 2 and count <= SLICE_ROWS:
        return _FIRST_ROWS.slice(0, count)
    return pc.add(_COUNTING.slice(0, count), first_row).cast(pa.string())


def join_pieces(pieces: Pieces, length: int, first_rows: pa.Array | None = None) -> pa.Array:
    """One string per row: ``pieces`` concatenated row by row.

    ``first_rows``: the array among ``pieces`` holding the row numbers, when it is :func:`row_numbers`'s copy of
    the first rows; each run of "literal, row numbers, literal" then becomes one cached array where there is room.
    """
    merged: Pieces = []
    for piece in pieces:
        if isinstance(piece, str) and merged and isinstance(merged[-1], str):
            merged[-1] += piece
        else:
            merged.append(piece)
    if first_rows is not None:
        merged = _fuse_rows(merged, first_rows)
    arrays = [p for p in merged if not isinstance(p, str)]
    if not arrays:
        return pa.array([merged[0] if merged else ""] * length, pa.string())
    if len(merged) == 1:
        return arrays[0]
    return pc.binary_join_element_wise(*(_literal(p) if isinstance(p, str) else p for p in merged), _NOTHING)


def _fuse_rows(merged: Pieces, rows: pa.Array) -> Pieces:
    fused: Pieces = []
    i = 0
    while i < len(merged):
        after = merged[i + 1] if i + 1 < len(merged) else None
        if merged[i] is rows and isinstance(after, str):
            before = fused[-1] if fused and isinstance(fused[-1], str) else ""
            cached = _ROW_PIECES.get(before, after, _size_class(len(rows)))
            if cached is not None:
                if before:
                    fused.pop()
                fused.append(cached.slice(0, len(rows)))
                i += 2
                continue
        fused.append(merged[i])
        i += 1
    return fused


class RowPieces:
    """``before + row number + after`` for the first rows, per pair of literals and size, made on first use.

    Bounded by bytes and never evicted: a sheet too wide to fit keeps its later columns' pieces apart rather than
    rebuilding them for every file. About 0.6 MB for 1,000-row files of 11 columns.
    """

    def __init__(self, budget: int) -> None:
        self._arrays: dict[tuple[str, str, int], pa.Array] = {}
        self._left = budget

    def get(self, before: str, after: str, size: int) -> pa.Array | None:
        found = self._arrays.get((before, after, size))
        if found is None and self._left > 0:
            found = pc.binary_join_element_wise(_literal(before), _FIRST_ROWS.slice(0, size), _literal(after), "")
            self._arrays[before, after, size] = found
            self._left -= found.nbytes
        return found


_ROW_PIECES = RowPieces(_CACHE_BYTES)


def _size_class(rows: int) -> int:
    """A power of two from 1,024 up: a process writing small files makes small cached arrays."""
    return min(max(1_024, 1 << (rows - 1).bit_length()), SLICE_ROWS)


@functools.lru_cache(maxsize=4_096)
def _literal(text: str) -> pa.Scalar:
    """A literal piece as an Arrow scalar, made once: converting each one on every call cost 15 % of a join."""
    return pa.scalar(text, pa.string())
