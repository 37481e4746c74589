"""Score texts with a registered model (default: the champion): one file in this process, or any
number of files on Ray into a folder.

    python -m jobs.predict --input reviews.csv --output scored.parquet [--model-uri models:/rnn-textcls@champion]
    python -m jobs.predict --input 's3://bucket/reviews/*.parquet' --output s3://bucket/scored/ [--workers 8]

Input: CSV, TSV, JSON Lines, Parquet or .txt (a text per line; fastText lines `__label__2 Great CD` give a
`label` and a `text` column, as training reads them; compressed ones too: reviews.csv.gz, .bz2, .zst, .lz4) with
a text column (`--text-column`, default `text`, else the columns the model was trained on; `title,content`
joins those columns as training with data.text_column=[title, content] did), read as written ("NA" or
"null" is text; every CSV/TSV column is a string, "00042" keeps its zeros); a row without text
(empty, missing, not a string) stops the job naming it. Output: the input columns plus
`label`, `probability` and one `p_<label>` column per label (`--score-prefix pred_` names them
pred_label, ...; an input that already has one of those columns, such as a labeled test set's
`label`, is refused until it is given). `--delimiter ';'` reads CSV/TSV with another field
separator; `--column-names label,title,text` reads CSV/TSV without a header line (the names of its
columns, in order: the output keeps them).

An output file (.csv/.tsv/.jsonl/.parquet; the first three also compressed: scored.csv.gz) is
written atomically (temporary file, then rename) from this process, which reads the input whole: for
one file that fits in memory. An output folder (a path ending in '/' or without extension) is batch
scoring on Ray Data (pipeline.registry.batch_scoring): the input may be a file, a folder or a glob;
a pool of actors scores it block by block into Parquet part files, published whole (`_COMPLETE` and
`_predict_summary.json`, with the model version, last). Either may be an object-store URL
(`s3://...`, as data.paths and output_root).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from jobs.cli import build_parser, run_main
from pipeline.console import progress_bars, say
from pipeline.errors import UserInputError
from schemas.config import JobConfig
from schemas.signature import TEXT_COLUMN

if TYPE_CHECKING:
    import pandas as pd

# Texts are read as written: a review that says "NA", "null" or "None" is text, not a missing value
# (pandas' CSV default), and "123" or "2024-01-01" stay strings (read_json's default dtype guessing).
# CSV columns are read as written, strings, as batch scoring's reader does (scoring_input.CsvSource), so
# one file gives the same output scored here or on Ray.
_READERS = {
    ".csv": lambda p, sep, names: _read_csv(p, sep or ",", names),
    ".tsv": lambda p, sep, names: _read_csv(p, sep or "\t", names),
    ".jsonl": lambda p, sep, names: _read_jsonl(p),
    ".parquet": lambda p, sep, names: _pd().read_parquet(p),
    ".txt": lambda p, sep, names: _read_txt(p),
}


def _read_txt(path: Path) -> pd.DataFrame:
    """A text per line, or fastText lines as `label` and `text` (pipeline.registry.scoring_input)."""
    from pipeline.data.sources import TXT_SNIFF_BYTES, reads_as_fasttext
    from pipeline.registry.scoring_input import text_lines_table

    data = path.read_bytes()
    return text_lines_table(data, reads_as_fasttext(data[:TXT_SNIFF_BYTES]), str(path)).to_pandas()


def _read_csv(path: Path, sep: str, names: tuple[str, ...] | None) -> pd.DataFrame:
    if names is None:
        return _pd().read_csv(path, sep=sep, keep_default_na=False, dtype=str)
    # header=None: the first line is a row (pandas would take the first row for the header otherwise).
    return _pd().read_csv(path, sep=sep, keep_default_na=False, dtype=str, header=None, names=list(names))


def _check_first_row(local: Path, path: str, sep: str, names: tuple[str, ...]) -> None:
    """A header-less input's first record against --column-names: pandas would shift the columns silently
    (fewer names than fields: the leading fields become an index) or score a header line as a text."""
    from pipeline.data.sources import first_csv_record, header_less_problem

    first = first_csv_record(local, sep, "utf-8")
    if first is not None and (problem := header_less_problem(first[2], names, "--column-names")) is not None:
        raise UserInputError(f"--input {path}: line 1 {problem}")


def _read_jsonl(path: Path) -> pd.DataFrame:
    pandas = _pd()
    # dtype=False keeps every value as written; pandas 2 still turns date-named columns ("date",
    # "*_at") into datetimes unless told not to, and pandas 3 deprecates saying so (a warning on stderr).
    dates = {} if int(pandas.__version__.split(".")[0]) >= 3 else {"convert_dates": False}
    return pandas.read_json(path, lines=True, dtype=False, **dates)


def _pd():
    import pandas  # on use: `--help` must not wait for pandas (nor MLflow, torch)

    return pandas


def _format_suffix(path: str) -> str:
    """The extension that names a file's format, behind a compression one (reviews.csv.gz: .csv)."""
    from pipeline.data.sources import data_suffix  # on use: `--help` must not wait for pandas

    return data_suffix(path)


def _writer(path: str):
    """The writer of `--output`'s format: (frame, local path) -> that file, compressed when the name ends in
    .gz, .bz2, .zst or .lz4 (CSV, TSV and JSON Lines: Parquet compresses inside the file)."""
    from pipeline.data.sources import compression_of

    ext, codec = _format_suffix(path), compression_of(path)
    writers = {
        ".csv": lambda df, p: df.to_csv(p, index=False, compression=None),
        ".tsv": lambda df, p: df.to_csv(p, sep="\t", index=False, compression=None),
        ".jsonl": lambda df, p: df.to_json(p, orient="records", lines=True, force_ascii=False, compression=None),
        ".parquet": lambda df, p: df.to_parquet(p, index=False),
    }
    if ext not in writers:
        raise UserInputError(
            f"--output {path}: unsupported extension {ext or PurePosixPath(path).suffix!r}; use .csv, .tsv, .jsonl "
            "or .parquet (the first three may be compressed: scored.csv.gz, .bz2, .zst, .lz4)"
        )
    if codec is None:
        return writers[ext]
    if ext == ".parquet":
        raise UserInputError(
            f"--output {path}: Parquet is compressed inside the file (snappy); name it without "
            f"{PurePosixPath(path).suffix!r}"
        )
    return lambda df, p: _compressed(writers[ext], df, Path(p), codec)


def _compressed(write, frame: pd.DataFrame, target: Path, codec: str) -> None:
    """`write` the frame to a plain file beside `target`, then compress it into `target` with pyarrow's codec
    (pandas' own compression of zstd needs the zstandard package)."""
    import shutil

    import pyarrow as pa

    plain = target.with_name(f".{target.name}.plain")
    write(frame, plain)
    with open(plain, "rb") as src, pa.CompressedOutputStream(str(target), codec) as dst:
        shutil.copyfileobj(src, dst, length=8 << 20)
    plain.unlink()


def _local_input(path: str, folder: str) -> Path:
    """The input as a plain local file: itself, or a copy in `folder` (fetched from object storage,
    decompressed: `pipeline.data.sources.plain_file`). Raises UserInputError when it is not there or does
    not decompress."""
    import pyarrow.fs as pafs

    from pipeline.data.sources import is_url, plain_file
    from pipeline.data.store import filesystem, local_path

    if is_url(path):
        fs, inner = filesystem(path)
        if fs.get_file_info(inner).type != pafs.FileType.File:
            raise UserInputError(f"--input {path} not found (no such object); check the bucket and key")
    elif not local_path(path).is_file():
        raise UserInputError(f"--input {path} not found")
    try:
        return plain_file(path if is_url(path) else str(local_path(path)), folder)
    except UserInputError as e:  # "<path>: could not be decompressed as gzip (...)"
        raise UserInputError(f"--input {e}") from None


def read_input(
    path: Path | str,
    text_column: str | tuple[str, ...] | None,
    delimiter: str | None = None,
    column_names: tuple[str, ...] | None = None,
) -> pd.DataFrame:
    from pipeline.registry.batch_scoring import check_column_names, check_delimiter

    path = str(path)
    ext = _format_suffix(path)
    check_delimiter(delimiter, ext, path)
    reader = _READERS.get(ext)
    if reader is None and (any(c in path for c in "*?[") or Path(path).is_dir() or path.endswith("/")):
        raise UserInputError(
            f"--input {path} names many files; an output file is written from one input file: give --output a "
            "folder (ending in /) to score them all on Ray"
        )
    if reader is None and not ext and "://" in path:  # an object-store prefix looks like any extensionless key
        raise UserInputError(
            f"--input {path} has no extension: to score the files under that prefix give --output a folder (ending "
            "in /), which runs on Ray; one input file must end in .csv, .tsv, .jsonl, .parquet or .txt"
        )
    if reader is None:
        raise UserInputError(f"--input {path}: unsupported extension {ext!r}; use .csv, .tsv, .jsonl, .parquet or .txt")
    check_column_names(column_names, text_column, ext, path)
    from pyarrow.lib import ArrowException

    with tempfile.TemporaryDirectory(prefix="rnn-predict-") as tmp:
        local = _local_input(path, tmp)
        if column_names is not None:
            _check_first_row(local, path, delimiter or ("\t" if ext == ".tsv" else ","), column_names)
        try:
            frame = reader(local, delimiter, column_names)
        # pandas/pyarrow parse errors (TypeError: a JSON line that holds a list, not an object)
        except (ValueError, TypeError, OSError, UnicodeDecodeError, ArrowException) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if ext == ".jsonl":  # pandas says where in bytes ("position 1810"); name the line instead
                from pipeline.data.sources import jsonl_error

                first = jsonl_error(local.read_bytes()) or first
            raise UserInputError(
                f"--input {path} could not be read as {ext[1:]} ({first}); "
                "fix the file or pass one in another supported format"
            ) from None
    if text_column is not None:  # None: chosen by the caller from the columns and the model
        from pipeline.registry.batch_scoring import check_text_columns

        check_text_columns(list(frame.columns), text_column, path)
    return frame


def _texts_of(frame: pd.DataFrame, path: Path, text_column: str | tuple[str, ...]) -> list[str]:
    """The column's texts (several columns: joined as in training), checked by the served model's own rule
    before any model is loaded."""
    from mlflow.exceptions import MlflowException

    from pipeline.data.text_columns import frame_texts
    from pipeline.errors import DataValidationError
    from pipeline.registry.raw_text_model import input_texts

    shown = text_column if isinstance(text_column, str) else ",".join(text_column)
    try:
        return input_texts(frame_texts(frame, text_column, f"--input {path}", "--text-column"))
    except DataValidationError as e:
        raise UserInputError(str(e)) from None
    except MlflowException as e:
        raise UserInputError(f"--input {path}, column {shown!r}: {e.message}") from None


def write_output(out: pd.DataFrame, output_path: Path | str) -> None:
    """`out` in the format of the path's extension, atomically: readers see the whole file or none.
    Written whole in a temporary folder, then placed by the store's one writer (`store.write_path`:
    a local temporary file renamed into place, or one object uploaded to the object store)."""
    from pipeline.data.store import write_path

    target = str(output_path)
    write = _writer(target)
    with tempfile.TemporaryDirectory(prefix="rnn-predict-") as tmp:
        local = Path(tmp) / target.rpartition("/")[2]
        write(out, local)
        write_path(target, local.read_bytes())


def predict_file(
    model_uri: str,
    input_path: Path | str,
    output_path: Path | str,
    text_column: str | tuple[str, ...] | None = TEXT_COLUMN,
    batch_size: int = 2048,
    prefix: str = "",
    delimiter: str | None = None,
    column_names: tuple[str, ...] | None = None,
) -> pd.DataFrame:
    import mlflow
    import pandas as pd
    from mlflow.exceptions import MlflowException
    from tqdm import tqdm

    from pipeline.registry.batch_scoring import (
        check_collisions,
        check_text_columns,
        default_text_column,
        label_names,
        trained_text_column,
    )

    def load():
        try:
            return mlflow.pyfunc.load_model(model_uri)
        except MlflowException as e:  # no such model, version or alias
            raise UserInputError(
                f"--model-uri {model_uri}: {str(e).splitlines()[0]}; train and promote a model "
                "first (jobs.run) or pass an existing --model-uri"
            ) from None

    _writer(str(output_path))  # an unsupported output extension stops the job before any scoring
    frame = read_input(input_path, text_column, delimiter, column_names)
    model = None
    if text_column is None:  # 'text', else the columns the model was trained on (loaded first only then)
        if TEXT_COLUMN not in frame.columns:
            model = load()
        text_column = default_text_column(
            list(frame.columns), TEXT_COLUMN if model is None else trained_text_column(model)
        )
        check_text_columns(list(frame.columns), text_column, str(input_path))
    texts = _texts_of(frame, input_path, text_column)
    model = model or load()
    check_collisions(list(frame.columns), label_names(model), prefix, str(input_path))
    parts = []
    for start in tqdm(range(0, len(texts), batch_size), desc="predict", unit="batch", disable=not progress_bars()):
        parts.append(model.predict(pd.DataFrame({TEXT_COLUMN: texts[start : start + batch_size]})).add_prefix(prefix))
    scored = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=[f"{prefix}label", f"{prefix}probability"])
    )
    out = pd.concat([frame.reset_index(drop=True), scored], axis=1)
    write_output(out, output_path)
    return out


def _text_columns_flag(value: str) -> str | tuple[str, ...]:
    """--text-column title,content -> ('title', 'content'); one name stays a name."""
    names = tuple(n.strip() for n in value.split(","))
    return names[0] if len(names) == 1 else names


def run(
    cfg: JobConfig,
    input_path: str,
    output_path: str,
    model_uri: str | None,
    text_column: str | tuple[str, ...] | None,
    prefix: str = "",
    workers: int | None = None,
    delimiter: str | None = None,
    column_names: tuple[str, ...] | None = None,
):
    """Score `input_path` into `output_path`: the scored frame (an output file), or the published
    folder's BatchScoringResult (an output folder: batch scoring on Ray)."""
    from pipeline.registry.batch_scoring import is_folder_output
    from pipeline.tracking import resolve_tracking_uri, tracking_store

    uri = model_uri or f"models:/{cfg.tracking.registered_model_name}@{cfg.promotion.alias}"
    if not is_folder_output(output_path):
        if workers is not None:
            raise UserInputError(
                f"--workers applies to an output folder (batch scoring on Ray), not to --output {output_path}; "
                "drop --workers or give a folder"
            )
        with tracking_store(resolve_tracking_uri(cfg)):  # `models:/` URIs resolve through it
            out = predict_file(
                uri, input_path, output_path, text_column, prefix=prefix, delimiter=delimiter, column_names=column_names
            )
        say(f"scored {len(out)} rows with {uri} -> {output_path}")
        return out
    from pipeline.cluster import ray_session
    from pipeline.registry.batch_scoring import SUMMARY, plan_scoring, score_to_folder

    with tracking_store(resolve_tracking_uri(cfg)):
        # Before Ray starts: a bad input, output folder, delimiter or model stops the job here.
        plan = plan_scoring(uri, input_path, output_path, text_column, prefix, delimiter, column_names)
    with ray_session(cfg.ray):
        result = score_to_folder(plan, workers)
    version = f" (version {result.model_version})" if result.model_version else ""
    files = f"{result.files} Parquet file{'s' if result.files != 1 else ''}"
    say(f"scored {result.rows} rows with {uri}{version} -> {output_path} ({files}, {SUMMARY}, _COMPLETE)")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = build_parser("python -m jobs.predict", __doc__)
    parser.add_argument(
        "--input",
        required=True,
        help="CSV, TSV, JSONL, Parquet or .txt file with a text column (with an output folder: also a folder or glob); "
        "local or s3:// URL",
    )
    parser.add_argument(
        "--output",
        required=True,
        help="where to write the scored rows: a file (.csv/.tsv/.jsonl/.parquet) or a folder of Parquet files "
        "scored on Ray (ends in / or has no extension); local or s3:// URL",
    )
    parser.add_argument("--model-uri", help="model to use (default: models:/<registered name>@<alias>)")
    parser.add_argument(
        "--text-column",
        type=_text_columns_flag,
        help="column with the texts (default: 'text', else the columns the model was trained on); title,content "
        "joins those columns as training with data.text_column=[title, content] did",
    )
    parser.add_argument(
        "--delimiter",
        type=lambda v: "\t" if v == "\\t" else v,  # '\t' as typed in a shell: a tab
        help="the field separator of CSV/TSV input (default: ',' for .csv, tab for .tsv), e.g. ';' or '\\t'",
    )
    parser.add_argument(
        "--column-names",
        type=lambda v: tuple(n.strip() for n in v.split(",")),
        help="CSV/TSV input without a header line: its columns' names, in order, comma-separated (e.g. "
        "label,title,text); the first line is then a row",
    )
    parser.add_argument(
        "--score-prefix", default="", help="prefix of the columns scoring adds (e.g. pred_: pred_label, ...)"
    )
    parser.add_argument(
        "--workers",
        type=_positive,
        help="with an output folder: at most this many scoring actors, 1 CPU each (default: the cluster's CPUs - 1)",
    )
    return run_main(
        parser,
        lambda cfg, a: run(
            cfg, a.input, a.output, a.model_uri, a.text_column, a.score_prefix, a.workers, a.delimiter, a.column_names
        ),
        argv,
    )


def _positive(value: str) -> int:
    import argparse

    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"a whole number of at least 1 expected, got {value!r}")
    return int(value)


if __name__ == "__main__":
    sys.exit(main())
