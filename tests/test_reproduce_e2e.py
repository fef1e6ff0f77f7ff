"""flows.reproduce: register a version with `dvc repro`, rebuild it from its lineage in a temporary worktree, and get
identical metrics and data hashes (CPU, same seeds); versions that cannot be rebuilt are refused in one line."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flows import reproduce as flow
from flows.reproduce import compare, lineage_of, reproduce
from stages.cli import run
from stages.io import PipelineError
from tests.conftest import make_project, run_in, store_client, write_reviews
from tests.test_e2e import tiny_params

pytestmark = pytest.mark.e2e
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]


def params(model_dir: Path) -> dict:
    # small and quick: no augmentation, 3 epochs of ~160 rows (enough for the toy task to be learnt, so the scores
    # are not a constant guess's); any test split of ~20 rows is comparable, so version 1 becomes champion whichever
    # rows the split hash puts there
    return tiny_params(model_dir) | {
        "augment": {"enabled": False},
        "finetune": {"epochs": 3, "batch_size": 16, "learning_rate": 3e-3, "log_every_steps": 5},
        "evaluate": {"probe_max_train_rows": 200, "min_test_rows": 1, "min_test_per_class": 1},
    }


def head(root: Path) -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.strip()


def worktrees(root: Path) -> int:
    out = subprocess.run(
        ["git", "worktree", "list", "--porcelain"], cwd=root, capture_output=True, text=True, check=True
    )
    return out.stdout.count("worktree ")


@pytest.fixture(scope="module")
def registered(tmp_path_factory, tiny_model_dir):
    """A project whose source data is committed, then `dvc repro`: version 1 of 'toy', trained from a clean commit."""
    root = make_project(tmp_path_factory.mktemp("reproduce"), params(tiny_model_dir))
    write_reviews(root / "data/source/reviews.csv", 200)
    subprocess.run([*GIT, "add", "data/source"], cwd=root, check=True)
    subprocess.run([*GIT, "commit", "-qm", "toy reviews"], cwd=root, check=True)
    run_in(root, "dvc", "repro")
    return root


def test_a_registered_version_rebuilds_to_identical_metrics(registered, tmp_path):
    client = store_client(registered)
    mv = client.get_model_version_by_alias("toy", "champion")
    tags = client.get_run(mv.run_id).data.tags
    assert (tags["mlflow.source.git.commit"], tags["git.dirty"]) == (head(registered), "false")
    out, lock = tmp_path / "reproduce.json", (registered / "dvc.lock").read_text()
    proc = run_in(registered, sys.executable, "-m", "flows.reproduce", "models:/toy@champion", "--out", str(out))
    report = json.loads(out.read_text())
    assert report["reproduced"] and report["problems"] == [], report["problems"]
    assert (report["version"], report["run_id"], report["commit"]) == ("1", mv.run_id, head(registered))
    rows = {r["name"]: r for r in report["metrics"]}
    assert {"test_accuracy", "test_f1_macro", "test_rows", "baseline_frozen_probe_accuracy"} <= set(rows)
    assert report["metrics"][0]["name"] == "test_accuracy"  # the register metric (the version's tag) leads
    assert all(r["rebuilt"] == r["recorded"] and r["ok"] for r in report["metrics"]), report["metrics"]
    assert rows["test_accuracy"]["recorded"] == float(mv.tags["test_accuracy"])
    data = {d["path"]: d for d in report["data"]}
    assert {"data/raw", "data/clean", "data/augmented", "data/tokenized"} <= set(data)
    assert any(path.startswith("test split") for path in data)
    assert all(d["ok"] and d["rebuilt"] == d["recorded"] for d in report["data"])
    # a real rebuild: every stage ran again, into a run of its own in a throwaway store
    for stage in ("ingest", "tokenize", "finetune", "evaluate"):
        assert f"Running stage '{stage}'" in proc.stderr
    assert "Running stage 'register'" not in proc.stderr
    assert report["rebuilt_run_id"] != mv.run_id
    assert report["rebuilt_scores"]["accuracy"] == rows["test_accuracy"]["recorded"]
    assert report["weights"] == {"files": ["model.safetensors"], "identical": True}  # CPU, same seeds: same bits
    assert "test_accuracy" in proc.stdout and "DIFFERS" not in proc.stdout and "byte-identical" in proc.stdout
    assert "reproduces: " in proc.stderr
    # the project's own registry, runs, dvc.lock and git are as they were; the worktree is gone
    assert len(client.search_model_versions("name='toy'")) == 1
    assert not client.search_runs(
        [client.get_run(mv.run_id).info.experiment_id], f"attributes.run_id = '{report['rebuilt_run_id']}'"
    )
    assert worktrees(registered) == 1 and report["worktree"] is None
    assert (registered / "dvc.lock").read_text() == lock
    assert run_in(registered, "git", "status", "--porcelain", "--untracked-files=no").stdout == ""


def test_a_rebuild_off_by_more_than_the_tolerance_is_exit_1_and_one_line(registered, monkeypatch, capsys):
    """The verdict on a rebuild that came out 1 point lower (a GPU, another machine): the rebuild itself is faked from
    the recorded run, so this costs no training."""
    client = store_client(registered)
    mv = client.get_model_version_by_alias("toy", "champion")
    recorded = client.get_run(mv.run_id).data

    def rebuilt(client, mv, tags, commit, repo, keep):
        data = {k.removeprefix("dvc."): v for k, v in tags.items() if k.startswith("dvc.data/")}
        metrics = recorded.metrics | {"test_accuracy": recorded.metrics["test_accuracy"] - 0.01}
        return {
            "run_id": "r",
            "metrics": metrics,
            "scores": None,
            "recorded_data": data,
            "rebuilt_data": data,
            "weights": {"files": ["model.safetensors"], "identical": False},
            "worktree": None,
        }

    monkeypatch.setattr(flow, "rebuild", rebuilt)
    monkeypatch.setattr(flow.signal, "signal", lambda *args: None)  # pytest's own SIGTERM handling stays
    monkeypatch.chdir(registered)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(SystemExit) as e:
        run(lambda: flow.main(["models:/toy@champion"]), "reproduce")
    out, err = capsys.readouterr()
    assert e.value.code == 1
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: reproduce: models:/toy@champion (version 1) does not reproduce: test_accuracy: ")
    assert line.endswith("; tolerance 0.5 points") and "more" not in line
    assert "-1.00 pt  DIFFERS (> 0.5 pt)" in out and "not byte-identical" in out
    flow.main(["models:/toy@champion", "--tolerance", "1.5"])  # within a wider tolerance it passes
    assert "DIFFERS" not in capsys.readouterr().out


def test_dvc_tracked_sources_come_from_the_cache_else_the_remote(tmp_path):
    """prepare(): a `dvc add`-ed source is checked out from this checkout's cache, pulled from the default remote (set
    in .dvc/config.local, out of git) when the cache lacks it, and named in one line when neither has it."""
    repo, remote = tmp_path / "repo", tmp_path / "remote"
    repo.mkdir()
    env = flow.pipeline_env("sqlite:///unused.db", repo)
    for cmd in (["git", "init", "-q"], [flow.dvc_exe(), "init", "-q"]):
        subprocess.run(cmd, cwd=repo, check=True, env=env)
    (repo / "data").mkdir()
    (repo / "data/reviews.csv").write_text("text,label\ngreat,positive\n")
    for cmd in (
        [flow.dvc_exe(), "add", "-q", "data/reviews.csv"],
        [*GIT, "add", "-A"],
        [*GIT, "commit", "-qm", "a tracked source"],
        [flow.dvc_exe(), "remote", "add", "-d", "--local", "store", str(remote)],
        [flow.dvc_exe(), "push", "-q"],
    ):
        subprocess.run(cmd, cwd=repo, check=True, env=env, capture_output=True)

    def prepared(name: str) -> Path:
        worktree = tmp_path / name
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(worktree)], cwd=repo, check=True)
        flow.prepare(repo, worktree, flow.pipeline_env("sqlite:///unused.db", worktree))
        return worktree

    remote.rename(tmp_path / "away")  # the cache alone suffices
    assert (prepared("from-cache") / "data/reviews.csv").read_text().endswith("great,positive\n")
    (tmp_path / "away").rename(remote)
    shutil.rmtree(repo / ".dvc/cache")
    assert (prepared("from-remote") / "data/reviews.csv").read_text().endswith("great,positive\n")
    shutil.rmtree(repo / ".dvc/cache")
    (repo / ".dvc/config.local").unlink()
    with pytest.raises(PipelineError) as e:
        prepared("from-nowhere")
    assert "no default remote is configured: dvc remote add -d <name> <url>" in str(e.value)
    assert "\n" not in str(e.value)


def test_compare_uses_points_for_scores_and_equality_for_counts():
    rows = compare(
        {"test_accuracy": 0.85, "test_f1_macro": 0.80, "test_rows": 40, "test_recall": 0.5},
        {"test_accuracy": 0.854, "test_f1_macro": 0.79, "test_rows": 41},
        tolerance=0.5,
    )
    ok = {r["name"]: r["ok"] for r in rows}
    assert ok == {"test_accuracy": True, "test_f1_macro": False, "test_rows": False, "test_recall": False}
    assert round(rows[0]["diff"], 6) == 0.4  # points: hundredths of the score
    assert compare({"test_accuracy": 0.85}, {"test_accuracy": 0.85}, tolerance=0)[0]["ok"]


@pytest.fixture(scope="module")
def hand_registered(tmp_path_factory, tiny_model_dir):
    """A git project and a store with versions whose runs carry the lineage tags of interest (no training)."""
    root = make_project(tmp_path_factory.mktemp("refusals"), params(tiny_model_dir))
    client = store_client(root)
    exp = client.create_experiment("nlp-transfer")
    client.create_registered_model("toy")
    commit = head(root)
    cases = {
        "dirty": {"mlflow.source.git.commit": commit, "git.dirty": "true"},
        "nocommit": {"git.commit": "unknown (not a git checkout, or no commit yet)"},
        "elsewhere": {"mlflow.source.git.commit": "0123456789abcdef0123456789abcdef01234567", "git.dirty": "false"},
    }
    for alias, tags in cases.items():
        run = client.create_run(exp, tags=tags)
        client.set_terminated(run.info.run_id)
        mv = client.create_model_version("toy", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
        client.set_registered_model_alias("toy", alias, mv.version)
    return root


def test_a_version_that_cannot_be_rebuilt_is_one_line_and_exit_1(hand_registered):
    proc = run_in(hand_registered, sys.executable, "-m", "flows.reproduce", "models:/toy@dirty", check=False)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    says = "was trained from uncommitted changes (git.dirty: true) on commit"
    assert lines[-1].startswith("error: reproduce: models:/toy@dirty (version 1, run ") and says in lines[-1]
    assert "Traceback" not in proc.stderr and worktrees(hand_registered) == 1


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("models:/toy@nope", "models:/toy@nope: toy has no alias 'nope' (its aliases: dirty, elsewhere, nocommit)"),
        ("models:/toy@nocommit", "has no 'mlflow.source.git.commit' tag (trained outside a git checkout)"),
        ("models:/toy@elsewhere", "was trained from commit 0123456789ab, which is not in this repository"),
        ("models:/ghost@champion", "no registered model 'ghost'"),
        ("models:/toy/7", "toy has no version 7"),
        ("toy@champion", "name a registered version as models:/<name>@<alias>"),
    ],
)
def test_refusals_name_the_reason(hand_registered, uri, says):
    with pytest.raises(PipelineError) as e:
        reproduce(store_client(hand_registered), uri, hand_registered, 0.5, allow_dirty=False, keep=False)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_allow_dirty_lets_a_dirty_version_through(hand_registered):
    client = store_client(hand_registered)
    mv = client.get_model_version_by_alias("toy", "dirty")
    tags = client.get_run(mv.run_id).data.tags
    assert lineage_of("models:/toy@dirty", mv, tags, hand_registered, allow_dirty=True) == (head(hand_registered), True)
