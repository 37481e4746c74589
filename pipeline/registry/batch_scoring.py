"""Batch scoring on Ray Data: inputs larger than one process, scored by a pool of actors.

`jobs.predict` with an output *folder* runs here. Its input (one file, a folder or a glob, local or
on object storage; CSV, TSV, JSON Lines, Parquet or .txt lines) is read by Ray Data's readers in blocks across
the cluster; each actor of a pool (1 CPU each, `workers` at most) unpacks the model once and scores
batches; the rows are written as Parquet part files. The driver holds only the model's files and
the counts, so the input is bounded by the cluster, not by one machine's memory (the single-file
path reads its input whole into pandas).

Why the model travels as bytes (the actors' constructor argument, which Ray keeps in its object
store): actors on other nodes may not reach the driver's MLflow store (a local sqlite file) or hold
its credentials. The driver resolves the URI once
(`models:/name@champion` can move while the job runs; every actor must score with one version),
downloads the files and loads them once itself, which checks them before any actor starts.

Publishing: nothing is visible under the output until every part is written. Local: the parts go
into a staging sibling renamed into place (a previous output is moved aside first and removed
after). Object storage has no rename: the parts go under a staging prefix, then are copied
(server-side) under the output, the summary and `_COMPLETE` last; a previous output is deleted
only once the new one is fully written. A failed run removes its staging and leaves the previous
output as it was. Rows keep the input's order (Ray Data's preserve_order, and a sink that writes
each task's blocks in order, `part-<task>.parquet`), so a rerun writes the same files.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pandas as pd

from pipeline.data.store import (
    MARKER,
    StorePath,
    discard,
    filesystem,
    is_remote,
    json_bytes,
    new_staging_dir,
    remove_stale_staging,
    write_file,
)
from pipeline.data.text_columns import column_names as text_columns
from pipeline.errors import UserInputError
from schemas.signature import TEXT_COLUMN

SUMMARY = "_predict_summary.json"
BATCH_ROWS = 1024  # rows per actor call: the model encodes and scores them in batches of 512
_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "json", ".parquet": "parquet", ".txt": "txt"}
_SHOWN = 3  # rows without text quoted in the error


@dataclass(frozen=True)
class BatchScoringResult:
    output: StorePath  # the published folder
    rows: int
    files: int  # Parquet part files
    model_uri: str
    model_version: str | None  # the registry version the URI resolved to, if it names one


def is_folder_output(path: str) -> bool:
    """An output path names a folder (batch scoring on Ray) when it ends in '/' or has no extension."""
    return path.endswith("/") or not PurePosixPath(path.split("://", 1)[-1]).suffix


def input_files(pattern: str) -> tuple[list[str], str]:
    """(files, format) of `--input`: a file, a folder (its data files, recursively) or a glob, local or
    an object-store URL. Raises UserInputError when nothing matches or the files mix formats."""
    from pipeline.data.sources import NoDataFiles, data_suffix, list_files

    try:
        files = [path for path, _ in list_files((pattern,), _FORMATS)]  # a folder's .txt files too
    except NoDataFiles as e:  # a folder of other files: which, and what scoring reads
        raise UserInputError(
            f"--input {pattern} holds no {', '.join(_FORMATS)} file (found {e.found}); point it at such files"
        ) from None
    except UserInputError:
        raise UserInputError(f"--input {pattern} matches no file; check the path or URL") from None
    # A compressed file (reviews.csv.gz) is of the format behind its compression: Ray's readers decompress it.
    kinds = {_FORMATS.get(data_suffix(f)) for f in files}
    if None in kinds or len(kinds) != 1:
        found = sorted({data_suffix(f) or "(none)" for f in files})
        raise UserInputError(
            f"--input {pattern}: files of one format expected (.csv, .tsv, .jsonl, .parquet or .txt), found {found}; "
            "point it at files of one kind"
        )
    return files, kinds.pop()


def check_delimiter(delimiter: str | None, ext: str, path: str) -> None:
    """--delimiter is one character, for CSV/TSV input (a ';'-separated file from a spreadsheet)."""
    if delimiter is None:
        return
    if len(delimiter) != 1 or delimiter in '\r\n"':
        raise UserInputError(
            f"--delimiter {delimiter!r}: one character expected, not a quote or line break (for example ';' or '|')"
        )
    if ext not in (".csv", ".tsv"):
        raise UserInputError(f"--delimiter applies to CSV or TSV input, not {path} ({ext or 'no extension'}); drop it")


def check_column_names(
    column_names: tuple[str, ...] | None, text_column: str | tuple[str, ...] | None, ext: str, path: str
) -> None:
    """--column-names names the columns of header-less CSV/TSV input, each once, the text column among them."""
    if column_names is None:
        return
    names = list(column_names)
    if ext not in (".csv", ".tsv"):
        raise UserInputError(
            f"--column-names applies to CSV or TSV input without a header line, not {path} ({ext or 'no extension'}); "
            "drop it"
        )
    if len(set(names)) != len(names) or any(not n.strip() for n in names):
        raise UserInputError(f"--column-names {','.join(names)}: name each column once, e.g. label,title,text")
    for column in text_columns(text_column) if text_column is not None else ():
        if column not in names:
            raise UserInputError(
                f"--text-column {column!r} is not among --column-names {','.join(names)}; pass --text-column with "
                "the name of the column holding the texts"
            )


def model_archive(model_uri: str) -> bytes:
    """The model's files (downloaded from the registry or run) as one gzipped tar."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="rnn-predict-model-") as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            tar.add(local, arcname="model")
        return buffer.getvalue()


def load_archive(archive: bytes, folder: str):
    """The pyfunc model of `model_archive`'s bytes, unpacked into `folder`."""
    import mlflow

    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        tar.extractall(folder, filter="data")
    return mlflow.pyfunc.load_model(str(Path(folder) / "model"))


def label_names(model) -> list[str]:
    """The class names of a loaded pyfunc of this project (pipeline.registry.raw_text_model)."""
    return list(model.unwrap_python_model().spec["label_names"])


def trained_text_column(model) -> str | tuple[str, ...]:
    """The columns a loaded model of this project was trained on, when several (data.text_column=[title,
    content]); else 'text'."""
    columns = model.unwrap_python_model().spec.get("text_columns")
    return tuple(columns) if columns else TEXT_COLUMN


def default_text_column(columns: list[str], trained: str | tuple[str, ...]) -> str | tuple[str, ...]:
    """No --text-column: the input's 'text' column, else the columns the model was trained on (as the
    served model reads its input)."""
    return TEXT_COLUMN if TEXT_COLUMN in columns else trained


def check_text_columns(columns: list, text_column: str | tuple[str, ...], where: str) -> None:
    """Every text column is among the input's `columns`; else UserInputError naming the one missing."""
    for column in text_columns(text_column):
        if column not in columns:
            from pipeline.data.sources import column_hint

            hint = column_hint(list(columns), column, "--text-column", "--delimiter")
            raise UserInputError(f"text column {column!r} not found in {where}; columns are {list(columns)}; {hint}")


def score_columns(labels: list[str], prefix: str) -> list[str]:
    """The columns scoring adds, in order: label, probability, one p_<label> per class."""
    return [f"{prefix}{name}" for name in ("label", "probability", *(f"p_{label}" for label in labels))]


def check_collisions(input_columns: list[str], labels: list[str], prefix: str, where: str) -> None:
    """Refuse an input that already has a column the scores would write (a labeled test set has
    `label`): two columns of one name are ambiguous in CSV and refused by Parquet."""
    clash = [c for c in score_columns(labels, prefix) if c in input_columns]
    if clash:
        suggestion = f"{prefix}pred_" if prefix else "pred_"
        raise UserInputError(
            f"--input {where} already has the column(s) {clash}, which scoring writes; pass --score-prefix "
            f"{suggestion} (scores as {suggestion}label, {suggestion}probability, ...) or drop those columns"
        )


def block_texts(rows: pd.DataFrame, text_column: str | tuple[str, ...], where: str) -> list[str]:
    """A block's texts (several text columns: joined as in training), or UserInputError quoting up to
    three rows without one by their values (a block does not know its rows' place in their file; the
    single-file path names row numbers instead)."""
    from pipeline.data.text_columns import frame_texts
    from pipeline.errors import DataValidationError
    from pipeline.registry.raw_text_model import why_not_text

    try:
        values = frame_texts(rows, text_column, f"--input {where}", "--text-column")
    except DataValidationError as e:
        raise UserInputError(str(e)) from None
    bad = [(i, why) for i, v in enumerate(values) if (why := why_not_text(v))]
    if bad:
        shown = "; ".join(f"{_row_text(rows.iloc[i])} ({why})" for i, why in bad[:_SHOWN])
        named = text_column if isinstance(text_column, str) else ",".join(text_column)
        raise UserInputError(
            f"--input {where}, column {named!r}: rows hold no text, e.g. {shown}; every row needs a "
            "non-empty string there: drop or fill those rows"
        )
    return [str(v) for v in values]


def _row_text(row: pd.Series) -> str:
    """A row as {column: value}, plain Python values (not np.int64(2)), long texts cut at 40 characters."""
    shown = {}
    for key, value in row.items():
        value = value.item() if hasattr(value, "item") and not isinstance(value, str) else value
        shown[key] = value[:40] + "..." if isinstance(value, str) and len(value) > 40 else value
    return str(shown)


class Scorer:
    """One actor of the pool (Ray Data map_batches): the model loaded once, then batches scored."""

    def __init__(self, archive: bytes, text_column: str | tuple[str, ...], prefix: str, where: str):
        self._folder = tempfile.TemporaryDirectory(prefix="rnn-predict-model-")
        self.model = load_archive(archive, self._folder.name)
        self.text_column, self.prefix, self.where = text_column, prefix, where

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        texts = block_texts(batch, self.text_column, self.where)
        scored = self.model.predict(pd.DataFrame({TEXT_COLUMN: texts})).add_prefix(self.prefix)
        return pd.concat([batch.reset_index(drop=True), scored], axis=1)


def _ordered_parquet_sink(folder: StorePath):
    """A Ray Data sink writing each write task's blocks, in order, to one `part-<task>.parquet` under
    `folder`; its `files` (path, rows) are known on the driver once the write completes.

    Why not `write_parquet`: Ray 2.60's Parquet sink hands a task's blocks to pyarrow's write_dataset
    with threads and without preserve_order, which reorders them (measured: 200,000 rows in 2 files
    came back with 1,024-row batches swapped), whatever the execution's preserve_order says.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from ray.data import Datasink

    fs, root = filesystem(str(folder)) if is_remote(folder) else (None, str(folder))

    class OrderedParquet(Datasink):
        def __init__(self) -> None:
            self.files: list[tuple[str, int]] = []  # (path, rows) of each file written, in order

        def on_write_start(self, schema=None) -> None:
            if fs is None:
                Path(root).mkdir(parents=True, exist_ok=True)

        def write(self, blocks, ctx) -> tuple[str, int] | None:
            path, writer, rows = f"{root}/part-{ctx.task_idx:06d}.parquet", None, 0
            try:
                for block in blocks:
                    table = block if isinstance(block, pa.Table) else pa.Table.from_pandas(block, preserve_index=False)
                    if not table.num_rows:
                        continue
                    if writer is None:
                        writer = pq.ParquetWriter(path, table.schema, filesystem=fs)
                    elif not table.schema.equals(writer.schema):
                        table = table.cast(writer.schema)  # e.g. a column Arrow typed per file
                    writer.write_table(table)
                    rows += table.num_rows
            finally:
                if writer is not None:
                    writer.close()
            return (path, rows) if writer is not None else None

        def on_write_complete(self, write_result) -> None:  # on the driver
            self.files = sorted(r for r in write_result.write_returns if r is not None)

    return OrderedParquet()


def _read(
    files: list[str],
    fmt: str,
    text_column: str | tuple[str, ...],
    delimiter: str | None = None,
    column_names: tuple[str, ...] | None = None,
):
    import ray.data

    from pipeline.data.store import arrow_paths
    from pipeline.registry.scoring_input import CsvSource, JsonLinesSource, TextLinesSource

    paths, fs = arrow_paths(files)
    if fmt == "parquet":
        return ray.data.read_parquet(paths, filesystem=fs, **_views_read_as_strings(paths[0], fs))
    if fmt == "json":
        return ray.data.read_datasource(JsonLinesSource(paths, filesystem=fs))
    if fmt == "txt":
        return ray.data.read_datasource(TextLinesSource(paths, filesystem=fs, fasttext=txt_is_fasttext(files[0])))
    import pyarrow.csv as pacsv

    # As the single-file reader: quoted newlines inside a review, every column read as written ("NA" stays
    # text, "007" keeps its zeros: strings are never nulls or numbers here).
    source = CsvSource(
        paths,
        filesystem=fs,
        parse_options=pacsv.ParseOptions(
            delimiter=delimiter or ("\t" if fmt == "tsv" else ","), newlines_in_values=True
        ),
        text_column=text_column,
        column_names=column_names,
    )
    return ray.data.read_datasource(source)


def txt_is_fasttext(path: str) -> bool:
    """Whether a `.txt` input holds fastText lines (`__label__2 Great CD`), from its first line (decompressed
    by its name; one ranged read on object storage), as training's data.format=auto decides."""
    from pipeline.data.sources import TXT_SNIFF_BYTES, open_data, reads_as_fasttext

    try:
        with open_data(path) as f:
            return reads_as_fasttext(f.read(TXT_SNIFF_BYTES))
    except OSError as e:
        raise UserInputError(f"--input {path} could not be read ({e})") from None


def _views_read_as_strings(path: str, fs) -> dict:
    """read_parquet's `schema` when the (first) file has Arrow string_view columns (Polars and DuckDB keep
    them in Parquet's metadata), read as plain strings: Ray Data can neither pickle such a block out of
    its read task nor hand it to pandas. {} otherwise, and for a footer that cannot be read (the read
    names the problem)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path, filesystem=fs)
    except (OSError, pa.ArrowException):
        return {}
    if not any(pa.types.is_string_view(f.type) for f in schema):
        return {}
    fields = [f.with_type(pa.string()) if pa.types.is_string_view(f.type) else f for f in schema]
    return {"schema": pa.schema(fields, metadata=schema.metadata)}


_REMOTE_ERROR = re.compile(r"^pipeline\.errors\.(\w+): (.+)$", re.MULTILINE)
# The exception lines of a failed read task's traceback (Ray re-raises it with the text only).
_EXCEPTION_LINE = re.compile(r"^[\w.]*(?:Error|Invalid|Exception): (.+)$", re.MULTILINE)


def _read_error(e: BaseException) -> str | None:
    """What a reader said about the input: Arrow's error raised here (Parquet footers are read on the
    driver), or the last exception line of a failed read task, whose text starts `ray::Read...` (a
    Parquet file's body, an object-store read; CSV and JSON Lines parse errors come as scoring_input's
    UserInputError, which names the file)."""
    import pyarrow as pa

    if isinstance(e, pa.ArrowException | UnicodeDecodeError):
        return str(e).strip().splitlines()[0]
    text = str(e)
    if "ray::Read" not in text.split("\n", 1)[0]:
        return None
    lines = _EXCEPTION_LINE.findall(text)
    return lines[-1].split(". Please check")[0].strip() if lines else None


@contextmanager
def _input_errors(where: str, fmt: str) -> Iterator[None]:
    """Run a Ray Data execution (quiet) and turn what the input causes into UserInputError: the one an
    actor raised (Ray re-raises it as a RayTaskError whose text holds the actor's traceback; the error
    itself does not travel), or a reader's parse error."""
    import pipeline.errors

    try:
        with _quiet_ray_data():
            yield
    except Exception as e:
        text = str(e)
        for name, message in _REMOTE_ERROR.findall(text):
            kind = getattr(pipeline.errors, name, None)
            if isinstance(kind, type) and issubclass(kind, UserInputError):
                raise kind(message.strip()) from None
        if (reason := _read_error(e)) is not None:
            raise UserInputError(
                f"--input {where} could not be read as {fmt} ({reason}); fix the file or pass files in another "
                "supported format"
            ) from None
        raise


@contextmanager
def _quiet_ray_data() -> Iterator[None]:
    """In quiet mode (pipeline.console), nothing from Ray Data's logger: its INFO progress (a dozen
    lines per execution, written by its own handler) and the ERROR it logs with an actor's traceback
    before raising it, which the job turns into its own one-line error."""
    from pipeline import console

    log = logging.getLogger("ray.data")
    saved = log.level
    if not console.verbose():
        log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(saved)


def check_output(output: str) -> None:
    """Refuse an output folder that exists and is not an earlier scoring output (no
    `_predict_summary.json`): a rerun replaces its own output whole, never a folder the user keeps
    other files in (`--output ./` would otherwise replace the working directory)."""
    import pyarrow.fs as pafs

    if is_remote(output):
        if "/" not in output.split("://", 1)[1].strip("/"):  # staging goes in a sibling prefix
            raise UserInputError(f"--output {output} is a bucket's root: give a folder inside it (s3://bucket/scored/)")
        fs, inner = filesystem(output.rstrip("/"))
    else:
        fs, inner = pafs.LocalFileSystem(), str(Path(output).resolve())
    kind = fs.get_file_info(inner).type
    if kind == pafs.FileType.NotFound:
        return
    if kind != pafs.FileType.Directory:
        raise UserInputError(f"--output {output} is a file; batch scoring writes a folder there: give a new folder")
    entries = fs.get_file_info(pafs.FileSelector(inner))
    if entries and not any(PurePosixPath(e.path).name == SUMMARY for e in entries):
        raise UserInputError(
            f"--output {output} holds files that no scoring run wrote (no {SUMMARY}), and a run replaces its output "
            "folder whole: give a new or empty folder"
        )


def _staging(final: StorePath) -> StorePath:
    """Where the parts are written: the store's local staging sibling (renamed into place), or on object
    storage a sibling prefix of the same name (copied under the output: a previous output stays whole
    until the new one is written, where the store's own staging is the output's prefix itself)."""
    if not is_remote(final):
        return new_staging_dir(Path(final).resolve())
    parent, _, name = str(final).rstrip("/").rpartition("/")
    return f"{parent}/.staging-{name}-{uuid.uuid4().hex[:8]}"


def _publish(staging: StorePath, final: StorePath, summary: dict) -> None:
    import pyarrow.fs as pafs

    if not is_remote(final):
        staging, final = Path(staging), Path(final).resolve()
        write_file(staging, SUMMARY, json_bytes(summary))
        (staging / MARKER).write_text("ok\n")
        old = final.parent / f".replaced-{final.name}-{uuid.uuid4().hex[:8]}"
        if final.exists():
            os.rename(final, old)  # the previous output, whole, until the new one is in place
        os.rename(staging, final)
        shutil.rmtree(old, ignore_errors=True)
        return
    fs, src = filesystem(str(staging))
    _, dst = filesystem(str(final).rstrip("/"))
    if fs.get_file_info(dst).type == pafs.FileType.Directory:
        fs.delete_dir(dst)
    # allow_not_found: an input without rows writes no part (the staging prefix was never created).
    for info in fs.get_file_info(pafs.FileSelector(src, recursive=True, allow_not_found=True)):
        if info.type == pafs.FileType.File:
            fs.copy_file(info.path, f"{dst}/{info.path[len(src) + 1 :]}")  # server-side copy
    write_file(final, SUMMARY, json_bytes(summary))
    write_file(final, MARKER, b"ok\n")  # last: the folder is now complete


def _resolve_version(model_uri: str) -> str | None:
    """The version a `models:/name@alias` or `models:/name/N` URI names now; None for other URIs."""
    from mlflow.tracking import MlflowClient

    if not model_uri.startswith("models:/"):
        return None
    name, _, ref = model_uri.removeprefix("models:/").partition("@")
    if ref:
        return str(MlflowClient().get_model_version_by_alias(name, ref).version)
    name, _, version = model_uri.removeprefix("models:/").partition("/")
    return version if version.isdigit() else None


def _pinned(model_uri: str, version: str | None) -> str:
    """`models:/name@alias` as `models:/name/<version>`: the files downloaded are those of the version
    recorded in the summary, even if the alias moves in between."""
    if version is None or "@" not in model_uri:
        return model_uri
    return f"models:/{model_uri.removeprefix('models:/').partition('@')[0]}/{version}"


@dataclass(frozen=True)
class ScoringPlan:
    """What the driver settles before any Ray work: the input's files, the model's files and version."""

    input_pattern: str
    files: list[str]
    fmt: str
    output: str  # the folder to publish (check_output passed)
    model_uri: str
    model_version: str | None  # the registry version the URI resolved to, if it names one
    archive: bytes  # model_archive of that version
    labels: list[str]
    text_column: str | tuple[str, ...] | None  # None: 'text', else the model's (trained_text_column)
    prefix: str
    delimiter: str | None = None  # CSV/TSV field separator, if not the format's own
    column_names: tuple[str, ...] | None = None  # CSV/TSV input without a header line: its columns
    trained_text_column: str | tuple[str, ...] = TEXT_COLUMN


def plan_scoring(
    model_uri: str,
    input_pattern: str,
    output: str,
    text_column: str | tuple[str, ...] | None,
    prefix: str = "",
    delimiter: str | None = None,
    column_names: tuple[str, ...] | None = None,
) -> ScoringPlan:
    """Resolve the input, the output and the model on the driver (no Ray needed). Raises UserInputError
    for an input that matches nothing or mixes formats, an output folder a scoring run did not write
    (check_output), and a model that does not exist or does not load."""
    from mlflow.exceptions import MlflowException

    files, fmt = input_files(input_pattern)
    check_output(output)
    check_delimiter(delimiter, f".{fmt}" if fmt != "json" else ".jsonl", input_pattern)
    check_column_names(column_names, text_column, f".{fmt}" if fmt != "json" else ".jsonl", input_pattern)
    try:
        version = _resolve_version(model_uri)
        archive = model_archive(_pinned(model_uri, version))
    except MlflowException as e:
        raise UserInputError(
            f"--model-uri {model_uri}: {str(e).splitlines()[0]}; train and promote a model first (jobs.run) or pass "
            "an existing --model-uri"
        ) from None
    with tempfile.TemporaryDirectory(prefix="rnn-predict-model-") as tmp:
        model = load_archive(archive, tmp)  # loads as every actor will: checked once, here
        labels, trained = label_names(model), trained_text_column(model)
    return ScoringPlan(
        input_pattern,
        files,
        fmt,
        output,
        model_uri,
        version,
        archive,
        labels,
        text_column,
        prefix,
        delimiter,
        column_names,
        trained,
    )


def score_to_folder(plan: ScoringPlan, workers: int | None = None) -> BatchScoringResult:
    """Score every row of the plan's input on the running Ray cluster into its Parquet output folder
    (see the module doc). Raises UserInputError for a missing or clashing column and for a row
    without text or a file that cannot be parsed (nothing is published then)."""
    import ray
    import ray.data

    # The executions' settings are taken from the driver's current context when a dataset is created
    # (a dataset's own `.context` set afterwards did not keep the order: measured, 200k rows).
    context = ray.data.DataContext.get_current()
    saved = context.execution_options.preserve_order, context.enable_progress_bars
    context.execution_options.preserve_order, context.enable_progress_bars = True, False
    try:
        return _score(plan, workers)
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = saved


def _scored(ds, schema, plan: ScoringPlan, text_column: str | tuple[str, ...], workers: int | None):
    """`ds` with the scores added by a pool of actors (lazy), after the column checks."""
    import ray
    import ray.data

    columns = list(schema.names)

    where, prefix = plan.input_pattern, plan.prefix
    check_text_columns(columns, text_column, where)
    check_collisions(columns, plan.labels, prefix, where)
    if workers is None:
        workers = max(1, int(ray.cluster_resources().get("CPU", 1)) - 1)  # a CPU left for reads and writes
    return ds.map_batches(
        Scorer,
        fn_constructor_args=(plan.archive, text_column, prefix, where),
        batch_size=BATCH_ROWS,
        batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=workers),
        num_cpus=1,
    )


def _score(plan: ScoringPlan, workers: int | None) -> BatchScoringResult:
    output = plan.output
    where, fmt, text_column, prefix = plan.input_pattern, plan.fmt, plan.text_column, plan.prefix
    with _input_errors(where, fmt):
        # Parquet: footers read here. Without --text-column, a header-less read types the model's columns.
        ds = _read(plan.files, fmt, text_column or plan.trained_text_column, plan.delimiter, plan.column_names)
        schema = ds.schema()
    # No schema: no file holds a row (a header-only CSV). The output is then an empty folder with its
    # summary (rows 0), as the one-file path writes an empty file: a scheduled run on a quiet day succeeds.
    if text_column is None:
        text_column = default_text_column([] if schema is None else schema.names, plan.trained_text_column)
    scored = None if schema is None else _scored(ds, schema, plan, text_column, workers)
    remove_stale_staging(output)  # a killed run's (local; the store's staging names)
    staging = _staging(output)
    try:
        sink = _ordered_parquet_sink(staging)
        if scored is not None:
            with _input_errors(where, fmt):
                scored.write_datasink(sink)
        rows, parts = sum(n for _, n in sink.files), len(sink.files)
        summary = {
            "input": where,
            "model_uri": plan.model_uri,
            "model_version": plan.model_version,
            "rows": rows,
            "files": parts,
            "text_column": text_column,
            "score_columns": score_columns(plan.labels, prefix),
            "scored_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        _publish(staging, output.rstrip("/") if is_remote(output) else output, summary)
    finally:
        discard(staging)  # gone after a publish; a failed run's parts otherwise
    return BatchScoringResult(output, rows, parts, plan.model_uri, plan.model_version)
