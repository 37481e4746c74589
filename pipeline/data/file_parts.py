"""One large input file read by several prepare tasks: where its parts start, and what each part reads.

Why: a map task loads its whole shard into memory, and the planner made one shard per input file, so a
single 10 GB CSV was one task holding 10 GB (README, "Known limits"). A file over
`data.split_file_mb` is now planned as several parts:

- Parquet: contiguous row groups, from the footer the driver reads (one small read per file);
- uncompressed CSV/TSV and JSON Lines: byte ranges cut where a record starts. The task that hashes the
  file for lineage (it reads every byte anyway) also finds the cuts: the first line start at or after
  each target offset that is not inside a double-quoted field. RFC 4180 doubles a quote inside a quoted
  field, so the parity of the quotes before a newline says whether the newline ends a record; JSON
  strings hold no raw newline. A file written with an escape character (`data.escapechar`) or
  compressed is not cut.

Each part of a CSV with a header line is read with that header in front, so every part parses as the
file does; line numbers in messages are shifted back to the file's own. Lineage is unchanged: the part
that hashes the file records it once, the others record nothing, so the cache key and the prepared
data are the same whether a file is cut or not.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field

MAX_PARTS = 4096  # of one file: more tasks than that only add scheduling overhead

# Encodings in which a byte 0x0A is always a newline and 0x22 always a double quote (never inside a
# multi-byte character), so that cuts can be found in the raw bytes.
_BYTE_SAFE = {"utf-8", "utf-8-sig", "ascii", "latin-1", "iso8859-1", "cp1252", "gb18030", "gbk"}


def byte_safe(encoding: str) -> bool:
    return codecs.lookup(encoding).name in _BYTE_SAFE


def text_parts(size: int, split_bytes: int) -> int:
    """How many byte-range parts a text file of `size` bytes is planned as (1: not cut)."""
    return max(1, min(MAX_PARTS, -(-size // max(split_bytes, 1))))


def parquet_parts(meta, split_bytes: int) -> list[tuple[int, int]]:
    """Contiguous row-group ranges [start, stop) of about `split_bytes` stored bytes each, from a
    `pyarrow.parquet.FileMetaData`; one range for a file of one row group."""
    ranges: list[tuple[int, int]] = []
    start, size = 0, 0
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        size += sum(rg.column(c).total_compressed_size for c in range(rg.num_columns))
        if size >= split_bytes and g + 1 < meta.num_row_groups:
            ranges.append((start, g + 1))
            start, size = g + 1, 0
    ranges.append((start, meta.num_row_groups))
    if len(ranges) > MAX_PARTS:  # as many parts as MAX_PARTS allows, of whole row groups each
        per = -(-meta.num_row_groups // MAX_PARTS)
        ranges = [(g, min(g + per, meta.num_row_groups)) for g in range(0, meta.num_row_groups, per)]
    return ranges


@dataclass
class RecordCuts:
    """Fed a file's bytes in order: where the records at or after each target offset start.

    `cuts[k]` is (byte offset, line number) of the first record starting at or after `targets[k]`
    (None: none does); `header_end` is that of the second record (the end of a header line).

    A CSV's quote parity tells records apart only if every quote opens a field (after a separator or a
    line break), closes one (before them) or is doubled. A stray quote inside an unquoted field (`12"
    pizza`), which pandas reads as a literal character, flips the parity for the rest of the file: the
    file is then `safe=False` and not cut at all (`found`)."""

    targets: list[int]
    quoted: bool  # CSV: newlines inside double quotes do not end a record
    sep: bytes = b","
    cuts: list[tuple[int, int] | None] = field(default_factory=list)
    header_end: tuple[int, int] | None = None
    safe: bool = True
    _offset: int = 0
    _lines: int = 0  # newlines before _offset
    _odd: bool = False  # an odd number of quotes before _offset: inside a quoted field
    _last: int = 0x0A  # the byte before _offset (a line break before the file's first byte)
    _closing_at_end: bool = False  # the previous block ended with a quote that must close a field
    _head: bytes = b""  # the file's first 3 bytes (a UTF-8 BOM?)

    def __post_init__(self) -> None:
        self.cuts = [None] * len(self.targets)

    @property
    def found(self) -> list[tuple[int, int] | None]:
        return self.cuts if self.safe else [None] * len(self.targets)

    def _check_quotes(self, block: bytes) -> None:
        """Clear `safe` at a quote that neither opens, closes nor doubles (vectorized: GB/s)."""
        import numpy as np

        arr = np.frombuffer(block, np.uint8)
        fence = np.frombuffer(self.sep + b'\n\r"', np.uint8)
        if self._closing_at_end and arr[0] not in fence:
            self.safe = False
        q = np.flatnonzero(arr == 0x22)
        self._closing_at_end = False
        if not len(q):
            return
        inside = (int(self._odd) + np.arange(len(q))) % 2 == 1  # the quote closes (or doubles) one
        prev = np.where(q > 0, arr[np.maximum(q - 1, 0)], self._last)
        if self._head == b"\xef\xbb\xbf":
            prev[q + self._offset == 3] = 0x0A  # a UTF-8 BOM: the first field starts after it
        nxt = arr[np.minimum(q + 1, len(arr) - 1)]
        at_end = q == len(arr) - 1
        bad = np.where(inside, ~np.isin(nxt, fence) & ~at_end, ~np.isin(prev, fence))
        if bad.any():
            self.safe = False
        self._closing_at_end = bool(at_end[-1] and inside[-1])

    def _wanted(self, end: int) -> bool:
        pending = [t for t, c in zip(self.targets, self.cuts, strict=True) if c is None and t < end]
        return self.header_end is None or bool(pending)

    def feed(self, block: bytes) -> None:
        if not block:
            return
        if len(self._head) < 3:
            self._head += block[: 3 - len(self._head)]
        if self.quoted and self.safe:
            self._check_quotes(block)
        self._last = block[-1]
        end = self._offset + len(block)
        if not self._wanted(end):  # the common case: count and move on (both at C speed)
            self._lines += block.count(b"\n")
            self._odd ^= bool(block.count(b'"') & 1) if self.quoted else False
            self._offset = end
            return
        pos, lines, odd = 0, self._lines, self._odd
        while (nl := block.find(b"\n", pos)) != -1:
            if self.quoted:
                odd ^= bool(block.count(b'"', pos, nl) & 1)
            lines += 1
            pos = nl + 1
            if not odd:  # a record starts at offset + pos, on line lines + 1
                self._record_start(self._offset + pos, lines + 1)
        self._lines = lines
        self._odd = odd ^ (bool(block.count(b'"', pos) & 1) if self.quoted else False)
        self._offset = end

    def _record_start(self, at: int, line: int) -> None:
        if self.header_end is None:
            self.header_end = (at, line)
        for k, t in enumerate(self.targets):
            if self.cuts[k] is None and t <= at:
                self.cuts[k] = (at, line)


def spans(cuts: list[tuple[int, int] | None], size: int) -> list[tuple[int, int, int]]:
    """Non-empty (start byte, end byte, first line) ranges covering the file, from the cuts of parts 1..n-1."""
    starts = [(0, 1)] + [c for c in cuts if c is not None and c[0] < size]
    starts = sorted(set(starts))
    ends = [s for s, _ in starts[1:]] + [size]
    return [(s, e, line) for (s, line), e in zip(starts, ends, strict=True) if e > s]


def shift_lines(message: str, uri: str, offset: int) -> str:
    """A reader's message about a part, its "<uri>: line N" moved to the file's own line number."""
    if not offset:
        return message

    def moved(m: re.Match) -> str:
        return f"{m[1]}{int(m[2]) + offset}" + (f"-{int(m[3]) + offset}" if m[3] else "")

    return re.sub(rf"({re.escape(uri)}: line )(\d+)(?:-(\d+))?", moved, message)


def read_range(uri: str, start: int, end: int) -> bytes:
    """Bytes [start, end) of a local file or an object-store file (a ranged read: nothing else fetched)."""
    from pipeline.data.store import filesystem, is_remote, local_path

    if not is_remote(uri):
        with open(local_path(uri), "rb") as f:
            f.seek(start)
            return f.read(end - start)
    fs, inner = filesystem(uri)
    with fs.open_input_file(inner) as f:
        return f.read_at(end - start, start)


def parquet_file(uri: str):
    """A `pyarrow.parquet.ParquetFile` over a local or object-store file (random access: a part reads its
    row groups only)."""
    import pyarrow.parquet as pq

    from pipeline.data.store import filesystem, is_remote, local_path

    if not is_remote(uri):
        return pq.ParquetFile(str(local_path(uri)))
    fs, inner = filesystem(uri)
    return pq.ParquetFile(fs.open_input_file(inner))
