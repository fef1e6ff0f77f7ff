"""What a run records about itself: a name a person can tell apart, DVC experiment tags, the data's DVC hashes."""

import hashlib
import re

from stages import lineage


def test_run_names_are_distinct_and_say_what_ran(monkeypatch):
    monkeypatch.delenv(lineage.EXP_NAME_ENV, raising=False)
    name = lineage.run_name("packaged:all-MiniLM-L6-v2", "sequence_classification")
    assert re.fullmatch(r"all-MiniLM-L6-v2-sequence-\d{8}-\d{6}", name), name
    assert lineage.run_name("/models/bert-base-cased/", "token_classification").startswith("bert-base-cased-token-")
    monkeypatch.setenv(lineage.EXP_NAME_ENV, "bushy-dogs")  # what `dvc exp run` sets for its stages
    assert lineage.run_name("dslim/bert-base-NER", "multilabel_classification") == "bert-base-NER-multilabel-bushy-dogs"


def test_exp_run_and_flow_tags(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages:\n  clean:\n    cmd: x\n    outs:\n"
                                       "    - path: data/clean\n      md5: abc.dir\n    - path: reports/clean.json\n"
                                       "      md5: def\n")
    monkeypatch.delenv(lineage.EXP_NAME_ENV, raising=False)
    monkeypatch.delenv(lineage.FLOW_RUN_ENV, raising=False)
    tags = lineage.lineage_tags()
    assert tags["dvc.data/clean"] == "abc.dir" and "dvc.reports/clean.json" not in tags
    assert "dvc.exp_name" not in tags and "prefect.flow_run_id" not in tags
    assert "git.commit" in tags  # not a git checkout: said so, not a crash
    monkeypatch.setenv(lineage.EXP_NAME_ENV, "bushy-dogs")
    monkeypatch.setenv(lineage.EXP_BASELINE_ENV, "0" * 40)
    monkeypatch.setenv(lineage.FLOW_RUN_ENV, "f-1")
    tags = lineage.lineage_tags()
    assert tags["dvc.exp_name"] == "bushy-dogs" and tags["dvc.exp_baseline_rev"] == "0" * 40
    assert tags["prefect.flow_run_id"] == "f-1"


def test_file_md5_is_dvcs_hash_of_the_file(tmp_path):
    from dvc_data.hashfile.hash import file_md5 as dvc_md5

    path = tmp_path / "train.parquet"
    path.write_bytes(b"x\r\n" * 1_000_000)  # several read blocks, and line ends DVC 3 must not rewrite
    assert lineage.file_md5(path) == hashlib.md5(b"x\r\n" * 1_000_000).hexdigest() == dvc_md5(str(path))
