"""Score a file of texts with a registered model (default: the champion), in batches.

    python -m jobs.predict --input reviews.csv --output scored.parquet [--model-uri models:/rnn-textcls@champion]

Input: CSV, JSON Lines or Parquet with a text column (`--text-column`, default `text`), read as
written ("NA" or "null" is text); a row without text (empty, missing, not a string) stops the job
naming its 0-based row index. Output: the
input columns plus `label`, `probability` and one `p_<label>` column per label, written
atomically (temporary file, then rename) in the format of the output's extension.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
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
# A CSV text column is read as strings even where every value looks like a number.
_READERS = {
    ".csv": lambda p, col: _pd().read_csv(p, keep_default_na=False, dtype={col: str}),
    ".jsonl": lambda p, col: _pd().read_json(p, lines=True, dtype=False, convert_dates=False),
    ".parquet": lambda p, col: _pd().read_parquet(p),
}


def _pd():
    import pandas  # on use: `--help` must not wait for pandas (nor MLflow, torch)

    return pandas


def _writer(path: Path):
    ext = path.suffix.lower()
    if ext == ".csv":
        return lambda df, p: df.to_csv(p, index=False)
    if ext == ".jsonl":
        return lambda df, p: df.to_json(p, orient="records", lines=True, force_ascii=False)
    if ext == ".parquet":
        return lambda df, p: df.to_parquet(p, index=False)
    raise UserInputError(f"--output {path}: unsupported extension {ext!r}; use .csv, .jsonl or .parquet")


def read_input(path: Path, text_column: str) -> pd.DataFrame:
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise UserInputError(f"--input {path}: unsupported extension {path.suffix!r}; use .csv, .jsonl or .parquet")
    if not path.is_file():
        raise UserInputError(f"--input {path} not found")
    from pyarrow.lib import ArrowException

    try:
        frame = reader(path, text_column)
    except (ValueError, OSError, UnicodeDecodeError, ArrowException) as e:  # pandas/pyarrow parse errors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserInputError(
            f"--input {path} could not be read as {path.suffix.lower()[1:]} ({first}); "
            "fix the file or pass one in another supported format"
        ) from None
    if text_column not in frame.columns:
        raise UserInputError(
            f"text column {text_column!r} not found in {path}; columns are {list(frame.columns)}; set --text-column"
        )
    return frame


def _texts_of(frame: pd.DataFrame, path: Path, text_column: str) -> list[str]:
    """The column's texts, checked by the served model's own rule before any model is loaded."""
    from mlflow.exceptions import MlflowException

    from pipeline.registry.raw_text_model import input_texts

    try:
        return input_texts(frame[text_column].tolist())
    except MlflowException as e:
        raise UserInputError(f"--input {path}, column {text_column!r}: {e.message}") from None


def predict_file(
    model_uri: str, input_path: Path, output_path: Path, text_column: str = TEXT_COLUMN, batch_size: int = 2048
) -> pd.DataFrame:
    import mlflow
    import pandas as pd
    from mlflow.exceptions import MlflowException
    from tqdm import tqdm

    write = _writer(output_path)
    frame = read_input(input_path, text_column)
    texts = _texts_of(frame, input_path, text_column)
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except MlflowException as e:  # no such model, version or alias
        raise UserInputError(
            f"--model-uri {model_uri}: {str(e).splitlines()[0]}; train and promote a model "
            "first (jobs.run) or pass an existing --model-uri"
        ) from None
    parts = []
    for start in tqdm(range(0, len(texts), batch_size), desc="predict", unit="batch", disable=not progress_bars()):
        parts.append(model.predict(pd.DataFrame({TEXT_COLUMN: texts[start : start + batch_size]})))
    scored = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["label", "probability"])
    out = pd.concat([frame.reset_index(drop=True), scored], axis=1)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_path.with_name(f".{output_path.name}.tmp-{os.getpid()}")
    try:
        write(out, tmp)
        os.replace(tmp, output_path)  # atomic: readers never see a half-written file
    finally:
        tmp.unlink(missing_ok=True)
    return out


def run(cfg: JobConfig, input_path: str, output_path: str, model_uri: str | None, text_column: str) -> pd.DataFrame:
    from pipeline.tracking import resolve_tracking_uri, tracking_store

    uri = model_uri or f"models:/{cfg.tracking.registered_model_name}@{cfg.promotion.alias}"
    with tracking_store(resolve_tracking_uri(cfg)):  # `models:/` URIs resolve through it
        out = predict_file(uri, Path(input_path), Path(output_path), text_column)
    say(f"scored {len(out)} rows with {uri} -> {output_path}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser("python -m jobs.predict", __doc__)
    parser.add_argument("--input", required=True, help="CSV, JSONL or Parquet file with a text column")
    parser.add_argument("--output", required=True, help="where to write the scored rows (.csv/.jsonl/.parquet)")
    parser.add_argument("--model-uri", help="model to use (default: models:/<registered name>@<alias>)")
    parser.add_argument("--text-column", default=TEXT_COLUMN, help="column with the texts (default: %(default)s)")
    return run_main(parser, lambda cfg, a: run(cfg, a.input, a.output, a.model_uri, a.text_column), argv)


if __name__ == "__main__":
    sys.exit(main())
