"""Batch scoring's CSV and JSON Lines readers: Ray Data read tasks whose parse errors name the file.

Ray 2.60's own readers lose what a user needs to fix a bad input of many files: `read_csv` replaces
Arrow's reason with "Failed to read CSV file: <path>", and `read_json` gives Arrow's reason ("Unexpected
character ... at position 1810") without the file, after a fallback to `json.load` that logs a
warning. These datasources (Ray's documented extension point: a `FileBasedDatasource` implementing
`_read_stream`) read the same way and raise UserInputError with the file, the line where it can be
told (JSON Lines) and the reason. The error travels back in the failed task's traceback, where
batch_scoring's `_input_errors` finds it.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

from ray.data.datasource import FileBasedDatasource

from pipeline.data.sources import header_less_problem, jsonl_error
from pipeline.data.text_columns import column_names as text_columns
from pipeline.errors import UserInputError


def _bad_input(path: str, fmt: str, reason: str) -> UserInputError:
    # One line: the driver reads the message back from the task's traceback line by line.
    reason = " ".join(reason.split())
    return UserInputError(
        f"--input file {path} could not be read as {fmt}: {reason}; fix that file or remove it from the input"
    )


class JsonLinesSource(FileBasedDatasource):
    """JSON Lines files, one Arrow table per file (as Ray's reader: Arrow's JSON reader needs the
    whole buffer), each row a JSON object."""

    def _read_stream(self, f, path: str) -> Iterator[Any]:
        import pyarrow as pa
        import pyarrow.json as pajson

        try:
            buffer = f.read_buffer()
        except OSError as e:  # a compressed file (.gz, .zst: Ray decompresses by the name) that does not decompress
            raise _bad_input(path, "JSON Lines", str(e).strip().splitlines()[0]) from None
        if buffer.size == 0:
            return
        # One block as large as the file (Arrow fails on an object straddling two blocks), at most 1 GiB
        # (Arrow's block size is a 32-bit integer; a line of over 1 GiB is not a review).
        block_size = min(max(1 << 20, buffer.size + 1), 1 << 30)
        options = pajson.ReadOptions(use_threads=False, block_size=block_size)
        try:
            yield pajson.read_json(io.BytesIO(buffer), read_options=options)
        except pa.ArrowInvalid as e:
            located = jsonl_error(buffer.to_pybytes())
            raise _bad_input(path, "JSON Lines", located or str(e).strip().splitlines()[0]) from None


def text_lines_table(data: bytes, fasttext: bool, where: str):
    """A `.txt` input as rows: one text per line that is not blank; fastText lines (`__label__2 Great CD`,
    as training reads them) as a `label` and a `text` column, the label as written. Shared by the one-file
    path and TextLinesSource, so both score the same rows. Raises UserInputError naming the file (bytes
    that are not UTF-8, a line with two labels)."""
    import pyarrow as pa

    from pipeline.data.sources import split_fasttext
    from pipeline.errors import DataValidationError

    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        raise _bad_input(where, "UTF-8 text", f"bytes at offset {e.start} are not UTF-8") from None
    kept = [(n, line.rstrip("\r")) for n, line in enumerate(text.split("\n"), 1) if line.strip()]
    lines = pa.array([line for _, line in kept], pa.string())
    if not fasttext:
        return pa.table({"text": lines})
    try:
        label, texts = split_fasttext(lines, where, [n for n, _ in kept])
    except DataValidationError as e:
        raise UserInputError(f"--input file {e}") from None
    return pa.table({"label": label, "text": texts})


class TextLinesSource(FileBasedDatasource):
    """`.txt` files, one table per file: a text per line, or fastText lines (`fasttext`, decided on the
    driver from the first file: every file then gives the same columns)."""

    def __init__(self, paths: list[str], *, fasttext: bool, **kwargs: Any):
        super().__init__(paths, **kwargs)
        self._fasttext = fasttext

    def _read_stream(self, f, path: str) -> Iterator[Any]:
        try:
            data = f.read_buffer().to_pybytes()
        except OSError as e:  # a compressed file that does not decompress
            raise _bad_input(path, "text", str(e).strip().splitlines()[0]) from None
        if data:
            yield text_lines_table(data, self._fasttext, path)


class CsvSource(FileBasedDatasource):
    """CSV/TSV files read in batches with Arrow's streaming reader (as Ray's `read_csv`), every column as
    written: a string.

    Why every column: Arrow infers a column's type from a file's first block and fails on a later value
    that does not fit, so an `id` column of 1, 2, 3 ... that turns into "A-17" a few MB down stopped
    the whole scoring job ("CSV conversion error to int64"). Each file's header is read first (the
    stream then starts again with those bytes) to name its columns as strings; the single-file reader
    of jobs.predict reads CSV the same way, so both give the same output for the same file."""

    HEADER_MAX = 1 << 20  # a header line longer than this keeps Arrow's inference for the other columns

    def __init__(
        self,
        paths: list[str],
        *,
        parse_options,
        text_column: str | tuple[str, ...],
        column_names: tuple[str, ...] | None = None,
        **kwargs: Any,
    ):
        super().__init__(paths, **kwargs)
        self._parse_options = parse_options
        self._text_column = text_column
        self._column_names = list(column_names) if column_names is not None else None

    def _read_stream(self, f, path: str) -> Iterator[Any]:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        try:
            head, names = self._header(f)
            if self._column_names is not None:  # no header line: the first record is a row
                problem = None if names is None else header_less_problem(names, self._column_names, "--column-names")
                if problem is not None:
                    raise UserInputError(f"--input file {path}: line 1 {problem}")
                names = self._column_names
            convert = pacsv.ConvertOptions(
                column_types={name: pa.string() for name in names or text_columns(self._text_column)},
                strings_can_be_null=False,
            )
            reader = pacsv.open_csv(
                io.BufferedReader(_Prepended(head, f), 1 << 20),
                read_options=pacsv.ReadOptions(use_threads=False, column_names=self._column_names),
                parse_options=self._parse_options,
                convert_options=convert,
            )
            for batch in reader:
                yield pa.Table.from_batches([batch])
        except (pa.ArrowInvalid, OSError) as e:  # OSError: a compressed file that does not decompress
            raise _bad_input(path, "CSV", str(e).strip().splitlines()[0]) from None

    def _header(self, f) -> tuple[bytes, list[str] | None]:
        """(the bytes read, the column names of the first record) from the start of a stream."""
        head = b""
        while len(head) < self.HEADER_MAX:
            chunk = f.read(1 << 16)
            head += chunk
            record = _first_record(head, self._parse_options, complete=not chunk)
            if record is not None or not chunk:
                return head, record
        return head, None


def _first_record(head: bytes, parse_options, complete: bool) -> list[str] | None:
    """The first CSV record of `head` once a second one starts after it (or the stream has ended)."""
    import csv
    from itertools import islice

    text = head.decode("utf-8", errors="replace").removeprefix("\ufeff")  # Arrow skips a UTF-8 BOM too
    try:
        records = list(islice(csv.reader(io.StringIO(text, newline=""), delimiter=parse_options.delimiter), 2))
    except csv.Error:
        return None
    return records[0] if records and (len(records) == 2 or complete) else None


class _Prepended(io.RawIOBase):
    """A stream that gives `head` (bytes already read from `rest`) first, then the rest of `rest`."""

    def __init__(self, head: bytes, rest) -> None:
        self._head, self._rest = memoryview(head), rest

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if len(self._head):
            n = min(len(b), len(self._head))
            b[:n], self._head = self._head[:n], self._head[n:]
            return n
        data = self._rest.read(len(b))
        b[: len(data)] = data
        return len(data)
