"""The champion's side of register's gate: its per-unit counts on the current test split.

evaluate writes the new model's counts (`reports/test_counts.npz`: stages.gate.Counts and the test split's hash);
register logs them with the version (`gate/test_counts.npz` in its run) and tags the version with the hash. When the
champion was scored on the same split, its logged counts are used as they are. Otherwise (the split changed since it
was registered, or it was registered before versions carried counts) the champion is re-scored: its registered model
folder is downloaded, the current clean splits are tokenized with its own tokenizer and max_length, and its task
scores the test split, so both models are always compared on the same test units.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path

import numpy as np

from stages import tracking
from stages.gate import Counts
from stages.io import PipelineError, read_json, split_paths, write_atomic

COUNTS = Path("reports/test_counts.npz")  # evaluate writes it, register reads it (a dvc.yaml out and dep)
ARTIFACT_DIR = "gate"  # where register logs it in the version's run
log = logging.getLogger(__name__)


def split_hash(clean_dir: Path) -> str:
    """The test split's identity: the sha256 of its clean file (same rows, same bytes)."""
    return hashlib.sha256(split_paths(clean_dir)["test"].read_bytes()).hexdigest()[:16]


def save_counts(path: Path, counts: Counts, split: str) -> None:
    write_atomic(path, lambda f: np.savez_compressed(f, counts=counts.counts, classes=np.asarray(counts.classes),
                                                     split=np.asarray(split)), binary=True)


def load_counts(path: Path) -> tuple[Counts, str]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return Counts(z["counts"], tuple(str(c) for c in z["classes"])), str(z["split"])
    except (OSError, KeyError, ValueError) as e:
        raise PipelineError(f"{path}: not a test-counts file ({e}); run dvc repro") from None


def logged_counts(mv, split: str) -> Counts | None:
    """The version's logged counts when they were taken on test split `split`; None when not (or none logged)."""
    import mlflow

    if (mv.tags or {}).get("test_split") != split or not mv.run_id:
        return None
    try:
        path = tracking.download(run_id=mv.run_id, artifact_path=f"{ARTIFACT_DIR}/{COUNTS.name}")
    except (mlflow.exceptions.MlflowException, OSError):
        return None
    counts, logged_split = load_counts(Path(path))
    return counts if logged_split == split else None


def rescore(task, folder: Path, clean_dir: Path, params) -> Counts:
    """Score the model in `folder` (a fine-tuned folder, as registered) on the test split of `clean_dir`."""
    from stages.io import read_splits
    from stages.loading import Trust, load_tokenizer
    from stages.modeling import pick_device
    from stages.tasks.base import EvalInputs

    meta = read_json(folder / "pipeline.json")
    trust = Trust(remote_code=bool(meta.get("trust_remote_code")))
    tokenizer = load_tokenizer(str(folder), trust)
    device = pick_device(params.finetune.device)
    tok = params.tokenize.model_copy(update={"max_length": meta["max_length"]})
    with tempfile.TemporaryDirectory(prefix="rescore-") as scratch:
        dd, _ = task.tokenize(clean_dir, tokenizer, meta["labels"], tok, Path(scratch))
        model = task.load_model(str(folder), trust=trust).to(device)
        inputs = EvalInputs(model, dd, lambda: read_splits(clean_dir), meta, tokenizer.pad_token_id, device,
                            lambda: None, lambda: None)
        return task.evaluate(inputs, [], params.evaluate.batch_size, params.evaluate.probe_max_train_rows).counts


def champion_counts(task, mv, split: str, clean_dir: Path, params) -> tuple[Counts, str]:
    """The champion version `mv`'s counts on test split `split`, and how they were obtained."""
    from stages.registry import model_folder

    counts = logged_counts(mv, split)
    if counts is not None:
        return counts, "its counts logged at registration (same test split)"
    log.info("re-scoring champion version %s on the current test split (it was scored on %s)", mv.version,
             (mv.tags or {}).get("test_split", "a split it did not record"))
    with tempfile.TemporaryDirectory(prefix="champion-") as tmp:
        return rescore(task, model_folder(mv, Path(tmp)), clean_dir, params), "re-scored on the current test split"
