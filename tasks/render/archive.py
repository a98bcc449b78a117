"""A small zip writer for XLSX packages: deflate by ISA-L, and parts compressed once reused as they are.

Why not :mod:`zipfile`: it deflates with zlib only, and it cannot take a part that is already compressed. Deflate
was 40 % of an XLSX file's time; ISA-L's deflate (python-isal) at its level 2 was 3.8x faster than zlib at level 1
on sheet XML and made a smaller file (docs/benchmarks.md, "XLSX: ISA-L deflate and fixed parts"). The parts every
file of a report shares (styles, theme, relationships) are compressed once per process (:class:`Packed`, at zlib's
level 9, since it is paid once) and copied into each file.

The layout is the one :mod:`zipfile` writes on a seekable file: no data descriptors (the local header is rewritten
with the sizes once a streamed part ends), a ZIP64 extra field on the streamed part from the start (it may pass
4 GiB), and ZIP64 records in the central directory only where a size or an offset needs them. Every entry carries
the same fixed time and permissions, so the same input gives the same bytes.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import IO, Any

_fast: Any  # isal_zlib, or zlib where the wheel is missing: both have compressobj, crc32 and DEFLATED
try:  # ISA-L's deflate: a dependency, but a missing wheel must not stop rendering (zlib writes valid files too)
    from isal import isal_zlib

    _fast, FAST_LEVEL = isal_zlib, 2  # ISA-L's levels are 0-3; 2 beat zlib's level 1 on both time and size
except ImportError:  # pragma: no cover - only where the wheel is missing
    _fast, FAST_LEVEL = zlib, 1

_ZIP64_LIMIT = (1 << 31) - 1  # as zipfile: past it, a size or offset goes in a ZIP64 field
_LIMIT32 = 0xFFFFFFFF  # what the 32-bit field then holds
_LOCAL = struct.Struct("<4s2B4HL2L2H")
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
_END = struct.Struct("<4s4H2LH")
_END64 = struct.Struct("<4sQ2H2L4Q")
_LOCATOR64 = struct.Struct("<4sLQL")
_DEFLATED, _UNIX = 8, 3
_ATTRIBUTES = 0o600 << 16


@dataclass(frozen=True)
class Packed:
    """One part, compressed: what an archive needs to copy it into a file without deflating it again."""

    name: str
    data: bytes  # raw deflate
    crc: int
    size: int


def pack(name: str, content: bytes, *, level: int = 9) -> Packed:
    """``content`` deflated once with zlib at ``level``, for parts copied into many files."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
    return Packed(name, compressor.compress(content) + compressor.flush(), zlib.crc32(content), len(content))


def dos_time(stamp: tuple[int, int, int, int, int, int]) -> tuple[int, int]:
    """(time, date) in MS-DOS form, as zip headers hold them; years before 1980 become 1980-01-01."""
    if stamp[0] < 1980:
        stamp = (1980, 1, 1, 0, 0, 0)
    year, month, day, hour, minute, second = stamp
    return hour << 11 | minute << 5 | second // 2, (year - 1980) << 9 | month << 5 | day


@dataclass
class _Entry:
    name: bytes
    offset: int
    crc: int = 0
    size: int = 0
    compressed: int = 0
    zip64: bool = False  # a ZIP64 extra field in the local header (streamed parts)


class Archive:
    """Writes one zip file to ``out`` (seekable, opened for binary writing, positioned at 0)."""

    def __init__(self, out: IO[bytes], stamp: tuple[int, int, int, int, int, int]) -> None:
        self._out = out
        self._time, self._date = dos_time(stamp)
        self._entries: list[_Entry] = []
        self._stream: _Entry | None = None
        self._compressor: Any = None

    def add(self, name: str, content: bytes) -> None:
        """A small part deflated now, by zlib at :mod:`zipfile`'s level: on a few kilobytes it costs microseconds,
        and ISA-L's fast levels would make it larger."""
        self.add_packed(pack(name, content, level=6))

    def add_packed(self, part: Packed) -> None:
        """A part compressed beforehand (``pack``), copied as it is."""
        self._check_idle()
        entry = _Entry(part.name.encode("ascii"), self._out.tell(), part.crc, part.size, len(part.data))
        self._out.write(self._local_header(entry))
        self._out.write(part.data)
        self._entries.append(entry)

    def open_stream(self, name: str) -> None:
        """Start a part written in pieces (``write``) until ``close_stream``; it may pass 4 GiB."""
        self._check_idle()
        entry = _Entry(name.encode("ascii"), self._out.tell(), zip64=True)
        self._out.write(self._local_header(entry))
        self._stream, self._compressor = entry, _fast.compressobj(FAST_LEVEL, _fast.DEFLATED, -15)

    def write(self, data: bytes | memoryview) -> None:
        entry = self._stream
        if entry is None:
            raise ValueError("no part is open for writing")
        entry.crc = _crc(data, entry.crc)
        entry.size += len(data)
        self._emit(entry, self._compressor.compress(data))

    def close_stream(self) -> None:
        entry = self._stream
        if entry is None:
            raise ValueError("no part is open for writing")
        self._emit(entry, self._compressor.flush())
        end = self._out.tell()
        self._out.seek(entry.offset)
        self._out.write(self._local_header(entry))  # now with the CRC and sizes
        self._out.seek(end)
        self._entries.append(entry)
        self._stream = self._compressor = None

    def close(self) -> None:
        """Write the central directory. The caller closes ``out``."""
        self._check_idle()
        start = self._out.tell()
        for entry in self._entries:
            self._out.write(self._central_header(entry))
        size, count = self._out.tell() - start, len(self._entries)
        if count > 0xFFFF or start > _ZIP64_LIMIT or size > _ZIP64_LIMIT:
            end64 = self._out.tell()
            self._out.write(_END64.pack(b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, size, start))
            self._out.write(_LOCATOR64.pack(b"PK\x06\x07", 0, end64, 1))
            count, size, start = min(count, 0xFFFF), min(size, _LIMIT32), min(start, _LIMIT32)
        self._out.write(_END.pack(b"PK\x05\x06", 0, 0, count, count, size, start, 0))

    def _emit(self, entry: _Entry, data: bytes) -> None:
        entry.compressed += len(data)
        self._out.write(data)

    def _check_idle(self) -> None:
        if self._stream is not None:
            raise ValueError("a streamed part is still open")

    def _local_header(self, entry: _Entry) -> bytes:
        extra, version, size, compressed = b"", 20, entry.size, entry.compressed
        if entry.zip64:
            extra = struct.pack("<2H2Q", 1, 16, size, compressed)
            version, size, compressed = 45, _LIMIT32, _LIMIT32
        fields = (version, 0, 0, _DEFLATED, self._time, self._date, entry.crc, compressed, size)
        return _LOCAL.pack(b"PK\x03\x04", *fields, len(entry.name), len(extra)) + entry.name + extra

    def _central_header(self, entry: _Entry) -> bytes:
        values = (entry.size, entry.compressed, entry.offset)
        big = [v for v in values if v > _ZIP64_LIMIT]
        extra = struct.pack(f"<2H{len(big)}Q", 1, 8 * len(big), *big) if big else b""
        size, compressed, offset = (_LIMIT32 if v > _ZIP64_LIMIT else v for v in values)
        version = 45 if big or entry.zip64 else 20
        fields = (version, _UNIX, version, 0, 0, _DEFLATED, self._time, self._date, entry.crc, compressed, size)
        header = _CENTRAL.pack(b"PK\x01\x02", *fields, len(entry.name), len(extra), 0, 0, 0, _ATTRIBUTES, offset)
        return header + entry.name + extra


def _crc(data: bytes | memoryview, start: int = 0) -> int:
    return int(_fast.crc32(data, start))
