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

from pipeline.data.sources import jsonl_error
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


class CsvSource(FileBasedDatasource):
    """CSV/TSV files read in batches with Arrow's streaming reader (as Ray's `read_csv`)."""

    def __init__(self, paths: list[str], *, parse_options, convert_options, **kwargs: Any):
        super().__init__(paths, **kwargs)
        self._parse_options = parse_options
        self._convert_options = convert_options

    def _read_stream(self, f, path: str) -> Iterator[Any]:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        try:
            reader = pacsv.open_csv(
                f,
                read_options=pacsv.ReadOptions(use_threads=False),
                parse_options=self._parse_options,
                convert_options=self._convert_options,
            )
            for batch in reader:
                yield pa.Table.from_batches([batch])
        except (pa.ArrowInvalid, OSError) as e:  # OSError: a compressed file that does not decompress
            raise _bad_input(path, "CSV", str(e).strip().splitlines()[0]) from None
