"""Training checkpoints: what a killed fine-tuning resumes from.

A checkpoint is accelerate's `save_state` (model, optimizer, scheduler, grad scaler, every process's RNG states) plus
the loop's own position and history (`loop.json`) and the best epoch's weights so far (`best.safetensors`). It is
written to `step-N.partial/` and renamed to `step-N/` once its `manifest.json` (every file's size and SHA-256) is in
place, so a checkpoint killed half-way is never taken for a whole one, and a damaged one is detected before loading.

Checkpoints live outside the DVC outputs, in a folder named after the stage's inputs (the tokenized data's bytes, the
model name, the params that shape training): a resume never picks up a checkpoint made from other data or params.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

from stages.io import read_json, write_json

MANIFEST, LOOP, BEST = "manifest.json", "loop.json", "best.safetensors"
KEEP_LAST = 2  # the newest and the one before: the fallback when the newest turns out damaged
NOT_SHAPING = {"checkpoint_every_steps", "keep_checkpoints", "checkpoint_dir", "log_every_steps"}  # left out of keys
log = logging.getLogger(__name__)


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def inputs_key(data_dir: Path, shaping: dict) -> str:
    """A short hash of every file under `data_dir` (bytes and relative path; or of the one file it names) and of the
    `shaping` params."""
    h = hashlib.sha256(json.dumps(shaping, sort_keys=True, default=str).encode())
    for path in [data_dir] if data_dir.is_file() else sorted(p for p in data_dir.rglob("*") if p.is_file()):
        h.update(f"{path.relative_to(data_dir)}\0{_sha256(path)}\0".encode())
    return h.hexdigest()[:16]


def stage_checkpoints(stage: str, data: Path, shaping: dict, p, main: bool) -> Checkpoints:
    """A training stage's checkpoint folder, `<p.checkpoint_dir>/<stage>/<key>`: the key hashes `data`'s bytes,
    `shaping` (model, ...) and every training param `p` holds but those saying where or how often checkpoints go, or
    logging, so a resume only ever continues the same run. The first process hashes the data and tells the others
    (every process reading ~0.5 GB at 1M rows would be N reads)."""
    from accelerate.utils import broadcast_object_list

    shaping = shaping | p.model_dump(mode="json", exclude=NOT_SHAPING)
    key = broadcast_object_list([inputs_key(data, shaping) if main else None])[0]
    return Checkpoints(Path(p.checkpoint_dir) / stage / key, p.checkpoint_every_steps, p.keep_checkpoints)


class Checkpoints:
    """The checkpoints of one set of inputs, under `folder`: save, find the newest whole one, load, clear."""

    def __init__(self, folder: Path, every_steps: int, keep: bool) -> None:
        self.folder, self.every_steps, self.keep = folder, every_steps, keep
        for name in ("accelerate.accelerator", "accelerate.checkpointing"):  # a line per file saved or loaded
            logging.getLogger(name).setLevel(logging.WARNING)

    def due(self, step: int) -> bool:
        return self.every_steps > 0 and step % self.every_steps == 0

    def save(self, acc, step: int, loop: dict, best: dict | None) -> None:
        """Every process calls this (accelerate saves each one's RNG state); the main one writes the rest."""
        from safetensors.torch import save_file

        final = self.folder / f"step-{step:08d}"
        part = final.with_name(final.name + ".partial")
        if acc.is_main_process:
            shutil.rmtree(part, ignore_errors=True)
        acc.wait_for_everyone()
        acc.save_state(str(part))
        if acc.is_main_process:
            write_json(part / LOOP, loop)
            if best is not None:
                save_file({k: v.contiguous() for k, v in best.items()}, str(part / BEST))
            files = sorted(p for p in part.rglob("*") if p.is_file())
            write_json(part / MANIFEST, {str(p.relative_to(part)): [p.stat().st_size, _sha256(p)] for p in files})
            shutil.rmtree(final, ignore_errors=True)
            part.rename(final)
            for old in self._whole()[KEEP_LAST:]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()

    def _whole(self) -> list[Path]:
        """Renamed (finished) checkpoint folders, newest first."""
        if not self.folder.is_dir():
            return []
        return sorted((p for p in self.folder.glob("step-*") if p.is_dir() and not p.name.endswith(".partial")),
                      reverse=True)

    def problem(self, path: Path) -> str | None:
        """Why `path` cannot be resumed from (a missing, resized or changed file), or None if it is whole."""
        if not (path / MANIFEST).exists():
            return "no manifest"
        for name, (size, digest) in read_json(path / MANIFEST).items():
            f = path / name
            if not f.exists():
                return f"{name} missing"
            if f.stat().st_size != size or _sha256(f) != digest:
                return f"{name} differs from its manifest (damaged)"
        return None

    def load_newest(self, acc) -> tuple[dict, dict | None] | None:
        """Restore the newest whole checkpoint into `acc`'s prepared objects: (loop state, best weights or None), or
        None when there is none. A damaged one is logged and skipped for the one before."""
        from safetensors.torch import load_file

        for path in self._whole():
            why = self.problem(path)
            if why is None:
                try:
                    acc.load_state(str(path))
                except Exception as e:  # a manifest is no proof against every failure: fall back, and say why
                    why = f"load failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
            if why is not None:
                log.warning("checkpoint %s skipped: %s", path, why)
                continue
            best = load_file(str(path / BEST)) if (path / BEST).exists() else None
            return read_json(path / LOOP), best
        return None

    def clear(self) -> None:
        """After a successful run: remove this input's checkpoints unless asked to keep them."""
        if not self.keep:
            shutil.rmtree(self.folder, ignore_errors=True)
