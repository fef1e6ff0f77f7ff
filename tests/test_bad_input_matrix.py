"""Every bad input a night job may meet, through `dvc repro` on real files: one line naming the file, row/line and
column where they apply, exit != 0, nothing partial in data/ models/ reports/, dvc.lock and the DVC cache unchanged,
and the next good run works (it finds everything as the last good run left it). Inputs that must work do.

The table in docs/bad-inputs.md is this matrix's output; the test fails when they disagree. Regenerate it with
    UPDATE_BAD_INPUT_TABLE=1 python -m pytest tests/test_bad_input_matrix.py
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import ROOT, make_project, run_in, sentiment_rows, update_params
from tests.test_e2e import tiny_params

pytestmark = pytest.mark.e2e
TABLE = ROOT / "docs/bad-inputs.md"
SOURCE = "data/source/in.csv"


def csv(rows: list[dict] | pd.DataFrame, **kw) -> bytes:
    return pd.DataFrame(rows).to_csv(index=False, **kw).encode()


GOOD = csv(sentiment_rows(200))
LINES = GOOD.decode().splitlines(keepends=True)


def with_rows(*extra: str) -> bytes:
    """The good file with `extra` CSV lines appended."""
    return GOOD + "".join(f"{line}\n" for line in extra).encode()


def parquet(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def conll(tag_of: dict[str, str] | None = None, one_column: bool = False) -> bytes:
    """A small CoNLL file (word and tag per line, sentences split by blank lines)."""
    words = [("John", "B-PER"), ("lives", "O"), ("in", "O"), ("Paris", "B-LOC"), (".", "O")]
    lines = []
    for i in range(60):
        for w, t in words:
            t = (tag_of or {}).get(w, t) if i == 7 else t
            lines.append(w if one_column and i == 7 else f"{w}{i if w == 'John' else ''} {t}")
        lines.append("")
    return "\n".join(lines).encode()


@dataclass
class Case:
    name: str
    files: dict[str, bytes]  # written under the project root (data/source/...)
    expect: str  # the error line must contain this (a regex); "" for inputs that must work
    params: dict = field(default_factory=dict)
    target: str = ""  # what `dvc repro` runs: the whole pipeline unless named
    check: str = ""  # for inputs that work: a report's count that must be > 0, "report.json:key.*.key" (* sums)


OTHER = csv(sentiment_rows(60, seed=1))  # other texts than GOOD's
NUMBERS = parquet(pd.DataFrame({"text": range(200), "label": ["negative", "positive"] * 100}))


def five_mb_text() -> bytes:
    rows = sentiment_rows(200)
    rows[3]["text"] = " ".join(["long"] * 1_100_000)  # 5.5 MB
    return csv(rows)


CASES = [
    Case("empty file", {SOURCE: b""}, r"data/source/in\.csv: the file is empty"),
    Case("header only", {SOURCE: b"text,label\n"}, r"data/source/in\.csv: .*header"),
    Case("missing text column", {SOURCE: GOOD.replace(b"text,label", b"review,label", 1)},
         r"data/source/in\.csv: no column 'text' \(ingest\.text_column\)"),
    Case("missing label column", {SOURCE: GOOD.replace(b"text,label", b"text,stars", 1)},
         r"data/source/in\.csv: no column 'label' \(ingest\.label_column\)"),
    Case("duplicate column names", {SOURCE: b"text,text,label\n" + "".join(
        f"{r['text']},{r['text']},{r['label']}\n" for r in sentiment_rows(200)).encode()},
         r"data/source/in\.csv: column 'text' occurs more than once in the header"),
    Case("a row with too many fields", {SOURCE: b"".join(x.encode() for x in LINES[:5]) + b"a,b,c,d\n"
                                        + b"".join(x.encode() for x in LINES[5:])}, r"data/source/in\.csv: line 6"),
    Case("unclosed quote", {SOURCE: with_rows('"never closed,positive', "more,negative")},
         r"data/source/in\.csv: .*(quote|EOF)"),
    Case("semicolon-separated, no format", {SOURCE: GOOD.replace(b",", b";")}, r"data/source/in\.csv: .*';'"),
    Case("undecodable bytes", {SOURCE: with_rows("caf\xe9 noir,negative").replace("é".encode(), b"\xe9")},
         r"data/source/in\.csv: line 202, byte column 4: cannot decode byte 0xe9"),
    Case("binary file named .csv", {SOURCE: bytes(range(256)) * 8}, r"data/source/in\.csv: .*binary"),
    Case("gzip file named .csv", {SOURCE: gzip.compress(GOOD)}, r"data/source/in\.csv: .*gzip"),
    Case("UTF-8 BOM (works)", {SOURCE: b"\xef\xbb\xbf" + GOOD}, "", target="tokenize"),
    Case("NaN texts (dropped, counted)", {SOURCE: with_rows(",positive", ",negative")}, "", target="clean",
         check="reports/clean.json:splits.*.dropped.empty"),
    Case("NaN label", {SOURCE: with_rows("some text here,")},
         r"data/source/in\.csv: row 201, column 'label': missing label"),
    Case("labels 'nan', 'null', 'None', '\"\"'", {SOURCE: with_rows("a text,nan", "b text,null", "c text,None",
                                                                  'd text,""')},
         r"data/source/in\.csv: row 201, column 'label': missing label"),
    Case("missing labels with missing_labels: drop (counted)", {SOURCE: with_rows("a text,nan", "b text,null")}, "",
         params={"ingest": {"missing_labels": "drop"}}, target="ingest", check="data/raw/ingest.json:dropped"),
    # a CSV's cells are read as text: numbers as texts come from typed formats
    Case("texts that are numbers (Parquet ints)", {"data/source/in.parquet": NUMBERS}, r"data/source/in\.parquet: row 1, "
         r"column 'text': int '0' is not a text.*non_string_text", params={"ingest": {"source": "data/source/in.parquet"}}),
    Case("numbers with non_string_text: convert (counted)", {"data/source/in.parquet": NUMBERS}, "", target="ingest",
         params={"ingest": {"source": "data/source/in.parquet", "non_string_text": "convert"}},
         check="data/raw/ingest.json:converted"),
    Case("one class only", {SOURCE: csv([{"text": f"text {i}", "label": "positive"} for i in range(200)])},
         r"data/source/in\.csv: .*one class"),
    Case("a test label absent from train", {"data/source/train.csv": GOOD, "data/source/val.csv": OTHER,
                                            "data/source/test.csv": csv([{"text": "odd one", "label": "neutral"}])},
         r"data/source/test\.csv: .*'neutral'",
         params={"ingest": {"source": "data/source/train.csv", "validation_file": "data/source/val.csv",
                            "test_file": "data/source/test.csv"}}),
    Case("every test row also in train", {"data/source/train.csv": GOOD, "data/source/val.csv": OTHER,
                                          "data/source/test.csv": csv(sentiment_rows(200)[:40])},
         r"data/raw/test\.parquet: all 40 test rows also occur in data/raw/train\.parquet.*meaningless",
         params={"ingest": {"source": "data/source/train.csv", "validation_file": "data/source/val.csv",
                            "test_file": "data/source/test.csv"}}),
    Case("a 5 MB text (truncated, counted)", {SOURCE: five_mb_text()}, "", target="tokenize",
         check="reports/tokenize.json:splits.*.truncated"),
    Case("JSONL with a malformed line", {"data/source/in.jsonl": b'{"text": "a", "label": "positive"}\n{"text": \n'},
         r"data/source/in\.jsonl: line 2", params={"ingest": {"source": "data/source/in.jsonl"}}),
    Case("Parquet with a float label column", {"data/source/in.parquet": parquet(pd.DataFrame(
        {"text": [r["text"] for r in sentiment_rows(200)], "label": [0.5] * 200}))},
         r"data/source/in\.parquet: .*'label'", params={"ingest": {"source": "data/source/in.parquet"}}),
    Case("CoNLL with no tag column", {"data/source/in.conll": conll(one_column=True)},
         r"data/source/in\.conll: line \d+", params={"task": "token_classification",
                                                     "ingest": {"source": "data/source/in.conll"}}),
    Case("CoNLL with an invalid tag", {"data/source/in.conll": conll({"Paris": "X-LOC"})},
         r"data/source/in\.conll: line \d+.*'X-LOC'", params={"task": "token_classification",
                                                              "ingest": {"source": "data/source/in.conll"}}),
    Case("params.yaml: a misspelt key", {}, r"params\.yaml: finetune\.learning_rat: unknown key",
         params={"finetune": {"learning_rat": 1e-4}}),
    Case("params.yaml: an ill-typed value", {}, r"params\.yaml: finetune\.epochs: Input should be a valid integer",
         params={"finetune": {"epochs": "three"}}),
    Case("params.yaml: an out-of-range value", {}, r"params\.yaml: ingest\.test_size",
         params={"ingest": {"test_size": 1.5}}),
]
MODEL_CASES = ["a model folder without weights", "a pickled .bin-only model"]


def total(value, keys: list[str]) -> int:
    """The count at `keys` in a report (`*`: every key at that level; a dict at the end: its values), summed."""
    if not keys:
        return sum(value.values()) if isinstance(value, dict) else int(value)
    parts = value.values() if keys[0] == "*" else [value[keys[0]]]
    return sum(total(v, keys[1:]) for v in parts)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def snapshot(root: Path) -> tuple[dict[str, str], str, list[str]]:
    """What a failed run must not change: the outputs' files (data/ but its source, models/, reports/), dvc.lock, the
    DVC cache's files."""
    files = {str(f.relative_to(root)): md5(f) for top in ("data", "models", "reports") for f in (root / top).rglob("*")
             if f.is_file() and f.relative_to(root).parts[:2] != ("data", "source")}
    cache = sorted(str(f.relative_to(root)) for f in (root / ".dvc/cache").rglob("*") if f.is_file())
    return files, (root / "dvc.lock").read_text(), cache


@pytest.fixture(scope="module")
def good(tmp_path_factory, tiny_model_dir):
    """A project after a good `dvc repro`, its params.yaml and source, and what that run left."""
    root = make_project(tmp_path_factory.mktemp("matrix"), tiny_params(tiny_model_dir) | {
        "augment": {"enabled": False}, "ingest": {"source": SOURCE}})
    (root / SOURCE).write_bytes(GOOD)
    run_in(root, "dvc", "repro")
    return root, (root / "params.yaml").read_text(), snapshot(root)


def error_line(out: str) -> str:
    lines = [line for line in out.splitlines() if line.startswith("error: ")]
    return lines[0] if lines else ""


def restore(root: Path, params_text: str, written: list[str]) -> None:
    for rel in written:
        (root / rel).unlink(missing_ok=True)
    (root / SOURCE).write_bytes(GOOD)
    (root / "params.yaml").write_text(params_text)


def stage_outs() -> dict[str, list[str]]:
    """Each stage's outputs, in the DAG's order (dvc.yaml)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: [o if isinstance(o, str) else next(iter(o)) for o in st.get("outs", [])]
            for name, st in stages.items()}


def check_nothing_partial(root: Path, case: Case, line: str, before) -> None:
    """The failing stage and every stage after it are as the last good run left them: their dvc.lock entries, their
    output files (absent or unchanged: no partial file, no temp folder). Stages before it may have run (their input
    changed and they succeeded): then their new outputs are in the cache; if none ran, the cache is unchanged."""
    outs = stage_outs()
    order = list(outs)
    failed = re.match(r"error: (\w+):", line)
    assert failed and failed.group(1) in order, f"{case.name}: no stage named in {line!r}"
    at = order.index(failed.group(1))
    files, lock_text, cache = snapshot(root)
    lock, lock_before = (yaml.safe_load(t or "{}").get("stages", {}) for t in (lock_text, before[1]))
    assert [s for s in order[at:] if lock.get(s) != lock_before.get(s)] == [], f"{case.name}: dvc.lock changed"
    ran = [s for s in order[:at] if lock.get(s) != lock_before.get(s)]
    theirs = tuple(o for s in ran for o in outs[s])
    changed = sorted(f for f, h in files.items() if before[0].get(f) != h and not f.startswith(theirs))
    assert not changed, f"{case.name}: partial or changed outputs {changed[:5]}"
    assert not [p for top in ("data", "models") for p in (root / top).glob(".*tmp*")], f"{case.name}: a temp folder"
    if not ran:
        assert cache == before[2], f"{case.name}: the DVC cache changed"


def try_case(root: Path, case: Case, params_text: str, good_lock: str) -> dict:
    """Run one case, check it, put the good input back and check the next good run; the table's row."""
    before, written = snapshot(root), []
    for rel, data in case.files.items():
        (root / rel).write_bytes(data)
        written.append(rel)
    if case.params:
        update_params(root, case.params)
    try:
        proc = run_in(root, "dvc", "repro", *([case.target] if case.target else []), check=False)
        out = proc.stdout + proc.stderr
        line = error_line(out)
        assert "Traceback" not in out, f"{case.name}: a traceback\n{out[-3000:]}"
        if case.expect:
            assert proc.returncode != 0, f"{case.name}: accepted\n{out[-2000:]}"
            assert re.search(case.expect, line), f"{case.name}: {line!r} does not match {case.expect!r}\n{out[-2000:]}"
            check_nothing_partial(root, case, line, before)
            partial = "none"
        else:
            assert proc.returncode == 0, f"{case.name}: failed\n{out[-3000:]}"
            if case.check:
                report, keys = case.check.split(":")
                count = total(json.loads((root / report).read_text()), keys.split("."))
                assert count > 0, f"{case.name}: {case.check} is {count}"
                line = f"works; {keys} {count} ({report})"
            else:
                line = "works"
            partial = "-"
    finally:
        restore(root, params_text, written)
    again = run_in(root, "dvc", "repro", check=False)
    assert again.returncode == 0, f"after {case.name}: the good run failed\n{again.stderr[-3000:]}"
    # the data it rebuilt is the last good run's, byte for byte (a training stage that re-ran has a new MLflow run id
    # in its reports, so only the data stages compare exactly)
    data_stages = [s for s, outs in stage_outs().items() if outs and all(o.startswith("data/") for o in outs)]
    now, good = (yaml.safe_load(t)["stages"] for t in ((root / "dvc.lock").read_text(), good_lock))
    differ = [s for s in data_stages if now.get(s) != good.get(s)]
    assert not differ, f"after {case.name}: the good run's {differ} differ from the last good run's"
    assert "up to date" in run_in(root, "dvc", "status").stdout, f"after {case.name}: dvc status not clean"
    return {"case": case.name, "exit": proc.returncode, "message": line, "partial": partial, "next good run": "ok"}


def model_cases(tmp: Path, tiny_model_dir: Path) -> list[Case]:
    """Model folders: one without weights, one with only a pickled pytorch_model.bin."""
    import torch
    from safetensors.torch import load_file

    no_weights, pickled = tmp / "no-weights", tmp / "pickled"
    for folder in (no_weights, pickled):
        shutil.copytree(tiny_model_dir, folder)
        for f in folder.glob("*.safetensors"):
            f.unlink()
    # transformers 5 writes safetensors whatever save_pretrained is told: the pickled file as older tools wrote it
    torch.save(load_file(tiny_model_dir / "model.safetensors"), pickled / "pytorch_model.bin")
    return [Case(MODEL_CASES[0], {}, r"no weights", params={"model": {"name": str(no_weights)}}),
            Case(MODEL_CASES[1], {}, r"pickled.*allow_pickle_weights", params={"model": {"name": str(pickled)}})]


def table(rows: list[dict]) -> str:
    head = ("# Bad input: what a run says\n\nGenerated by `tests/test_bad_input_matrix.py` (each case through `dvc "
            "repro` on a real file; then the good input is put back and `dvc repro` must succeed and rebuild the last good "
            "run's data byte for byte).\n`partial output`: files under data/, models/, reports/ that differ from the last good run, and "
            "dvc.lock or DVC cache changes (none in every failing case).\n\n"
            "| case | exit | message | partial output | next good run |\n|---|---|---|---|---|\n")
    esc = lambda s: str(s).replace("|", "\\|")
    return head + "".join(f"| {esc(r['case'])} | {r['exit']} | `{esc(r['message'])}` | {r['partial']} | "
                          f"{r['next good run']} |\n" for r in rows)


def test_bad_input_matrix(good, tmp_path, tiny_model_dir):
    root, params_text, before = good
    rows, failures = [], []  # (the cases run in order on one project: each starts from the last good run)
    only = os.environ.get("BAD_INPUT_CASES")  # e.g. "params.yaml" : the cases whose name contains it
    for case in [c for c in [*CASES, *model_cases(tmp_path, tiny_model_dir)] if not only or only in c.name]:
        try:
            rows.append(try_case(root, case, params_text, before[1]))
        except AssertionError as e:  # every case is tried: the report lists all that fail
            failures.append(str(e).split("\nassert")[0][:1500])
    assert not failures, "\n\n".join(failures)
    for r in rows:  # the model folders' paths vary from run to run
        r["message"] = r["message"].replace(str(tmp_path), "<tmp>")
    if only:
        return  # a subset: the table is the whole matrix's
    text = table(rows)
    if os.environ.get("UPDATE_BAD_INPUT_TABLE"):
        TABLE.parent.mkdir(exist_ok=True)
        TABLE.write_text(text)
    assert TABLE.exists() and TABLE.read_text() == text, (
        "docs/bad-inputs.md is not what the matrix gives now; regenerate: UPDATE_BAD_INPUT_TABLE=1 "
        "python -m pytest tests/test_bad_input_matrix.py")
