"""Batch scoring: a file (or a folder of them) through a registered model, predictions written beside the input rows.

    python -m flows.predict models:/sentiment-classifier@champion reviews.csv                # → reviews.predictions.parquet
    python -m flows.predict models:/sentiment-classifier@champion data/new/ --out scored.csv

Streams: the input is read `--chunk-rows` rows at a time (CSV/TSV/JSONL with pandas' chunked readers, Parquet by
record batch) and each chunk's predictions are appended to the output before the next is read, so memory is bounded
by the chunk, not the file. Within a chunk the model batches texts by length (stages.modeling). Prediction columns
are prefixed `pred_` (an input's own `label` column stays as it was); lists and dicts (NER spans, label sets) are
JSON strings. The output appears only when every row is scored (a temp file renamed at the end); a bad row stops the
run with one line naming the file, row and column.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from stages.io import PipelineError, write_atomic

SUFFIXES = (".csv", ".tsv", ".jsonl", ".parquet")
log = logging.getLogger(__name__)


def input_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.suffix in SUFFIXES)
        if not files:
            raise PipelineError(f"{path}: no {'/'.join(SUFFIXES)} files to score")
        return files
    if not path.exists():
        raise PipelineError(f"{path}: no such file or folder")
    if path.suffix not in SUFFIXES:
        raise PipelineError(f"{path}: cannot read '{path.suffix}' files (use {', '.join(SUFFIXES)})")
    return [path]


def chunks(path: Path, rows: int) -> Iterator[pd.DataFrame]:
    """The file's rows, `rows` at a time. CSV/TSV cells stay text, as written: pandas would guess each chunk's types
    on its own (an id column int in one chunk, float in the next), and the output's schema must not change."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        # Page by page through a 1 MiB buffer: pyarrow's default (pre_buffer) reads each row group's column chunks
        # whole first, and a pandas-written file is one row group of up to 1M rows (bench.predict_stream: +113 MiB).
        for batch in pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False).iter_batches(batch_size=rows):
            yield batch.to_pandas()
        return
    reader = (pd.read_json(path, lines=True, chunksize=rows, dtype=False) if path.suffix == ".jsonl" else
              pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",", chunksize=rows, dtype=str,
                          keep_default_na=False))
    with reader:
        yield from reader


def flat(predictions) -> pd.DataFrame:
    """The model's output as `pred_` columns: a DataFrame's columns, or one `pred_value` column for a list."""
    df = predictions if isinstance(predictions, pd.DataFrame) else pd.DataFrame({"value": list(predictions)})
    df = df.rename(columns=lambda c: f"pred_{c}")
    for col in df.columns:
        if df[col].map(lambda v: isinstance(v, list | dict)).any():
            df[col] = df[col].map(lambda v: json.dumps(v, default=float))
    return df.reset_index(drop=True)


def score(model, files: list[Path], column: str, rows: int, write, progress) -> int:
    """Score every chunk of every file with `model` and hand input + predictions to `write`; returns the row count."""
    from mlflow.exceptions import MlflowException

    done = 0
    for path in files:
        start = 0
        for df in chunks(path, rows):
            if column not in df.columns:
                raise PipelineError(f"{path}: no '{column}' column (columns: {list(df.columns)[:8]}; --text-column)")
            try:
                pred = model.predict(df[[column]].rename(columns={column: "text"}))
            except MlflowException as e:
                msg = e.message.split("; expected")[0]
                if msg.startswith("input row "):  # the chunk's row → the file's (data rows from 1, header apart)
                    n, _, rest = msg.removeprefix("input row ").partition(":")
                    msg = f"row {start + int(n) + 1}, column '{column}':{rest}"
                raise PipelineError(f"{path}: {msg}") from None
            write(pd.concat([df.reset_index(drop=True), flat(pred)], axis=1))
            start += len(df)
            done += len(df)
            progress.update(len(df))
    return done


class Writer:
    """Appends chunks to one CSV, JSONL or Parquet file (the Parquet schema is the first chunk's)."""

    def __init__(self, f, suffix: str) -> None:
        self.f, self.suffix, self.parquet, self.first = f, suffix, None, True

    def __call__(self, df: pd.DataFrame) -> None:
        if self.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(df, preserve_index=False)
            if self.parquet is None:
                self.parquet = pq.ParquetWriter(self.f, table.schema)
            self.parquet.write_table(table.cast(self.parquet.schema))
        elif self.suffix == ".jsonl":
            self.f.write(df.to_json(orient="records", lines=True, force_ascii=False).encode())
        else:
            self.f.write(df.to_csv(index=False, header=self.first, sep="\t" if self.suffix == ".tsv" else ",").encode())
        self.first = False

    def close(self) -> None:
        if self.parquet is not None:
            self.parquet.close()


def main(argv: list[str] | None = None) -> None:
    from tqdm import tqdm

    from stages import tracking

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_uri", help="models:/<name>@<alias>, models:/<name>/<version>, or a model folder")
    ap.add_argument("input", type=Path, help="a CSV/TSV/JSONL/Parquet file, or a folder of them")
    ap.add_argument("--out", type=Path, help="default: <input>.predictions.parquet beside it")
    ap.add_argument("--text-column", default="text")
    ap.add_argument("--chunk-rows", type=int, default=10_000, help="rows read and scored at a time (bounds memory)")
    args = ap.parse_args(argv)
    files = input_files(args.input)
    out = args.out or args.input.with_name(f"{args.input.stem}.predictions.parquet")
    if out.suffix not in SUFFIXES:
        raise PipelineError(f"--out {out}: write .csv, .tsv, .jsonl or .parquet")
    if args.model_uri.startswith("models:/"):
        tracking.check_server()
    model = tracking.load_model(args.model_uri)
    rows: list[int] = []

    def write_all(f) -> None:
        writer = Writer(f, out.suffix)
        try:
            with tqdm(unit=" rows", desc="scoring", mininterval=2) as progress:
                rows.append(score(model, files, args.text_column, args.chunk_rows, writer, progress))
        finally:
            writer.close()
    write_atomic(out, write_all, binary=True)
    log.info("scored %d rows of %d file(s) with %s: %s", rows[0], len(files), args.model_uri, out)

if __name__ == "__main__":
    from stages.cli import run

    run(main, "predict")
