"""The interface every task implements: what each stage asks of a task, and nothing else.

A stage looks its task up once (`params, task = tasks.load()`) and calls these methods; it never asks which task it
has. A task is one module in this package, a subclass of `Task`, listed in `stages/tasks/__init__.py`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from stages.io import PipelineError, read_json
from stages.params import AugmentParams, CleanParams, FinetuneParams, IngestParams, Params, TokenizeParams

Frames = dict[str, pd.DataFrame]  # a source as read: {'all'} or given {'train', 'validation'?, 'test'}
Validate = Callable[[Any, Any], dict[str, float]]  # (model, autocast dtype or None) → validation metrics


@dataclass
class Ingested:
    splits: Frames  # train / validation / test
    labels: list[str]  # the model's label names, in id order
    summary: dict  # per split: what ingest wrote (rows, label counts, ...)
    report: dict = field(default_factory=dict)  # what reading dropped or converted, counted per reason (not per split)


@dataclass
class EvalInputs:
    """What evaluate hands a task: the fine-tuned model, the tokenized splits, the cleaned texts (for baselines that
    re-encode them) and the model's pipeline.json (labels, max_length, task extras such as thresholds)."""

    model: Any
    tokenized: Any  # datasets.DatasetDict
    clean: Callable[[], Frames]  # read on demand: only the frozen probe needs the texts
    meta: dict
    pad_id: int
    device: Any
    encoder: Callable[[], Any]  # the frozen pretrained encoder, loaded on demand
    tokenizer: Callable[[], Any]  # the pretrained tokenizer, loaded on demand

    @property
    def labels(self) -> list[str]:
        return self.meta["labels"]


@dataclass
class Evaluation:
    """evaluate's result: test metrics, the baselines', one row per class (label, precision, recall, f1, support; every
    class of the model, support 0 included), the (actual, predicted) pairs the confusion plot counts, over `classes`,
    anything else for metrics.json, the number of test units (rows, sentences), `rescore(idx)`: the task's
    default metric on the test units `idx` (with repeats: the bootstrap's resamples), and `counts`: per unit and class,
    tp/fp/fn (stages.gate.Counts), what register's champion/challenger gate tests."""

    test: dict[str, float]
    baselines: dict[str, dict[str, float]]
    per_class: list[dict]
    actual: list[str]
    predicted: list[str]
    classes: list[str]
    extra: dict = field(default_factory=dict)
    units: int = 0
    rescore: Callable[[np.ndarray], float] | None = None
    counts: Any = None  # stages.gate.Counts


class Task(ABC):
    name: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]]  # what finetune.best_metric / register.metric may name; the first is 'auto'
    operations: ClassVar[tuple[str, ...]]  # the augment operations that keep this task's labels true
    baselines: ClassVar[tuple[str, ...]] = ("majority", "frozen_probe")  # what evaluate.baselines may name here
    unit: ClassVar[str] = "rows"  # what ingest and clean count
    examples: ClassVar[list[str]]  # register's input example
    answers_empty_text: ClassVar[bool] = False  # serving: an empty text has an honest prediction (else: refused)
    # register's gate: the metrics it can test from per-unit counts (stages.gate.KINDS), and whether macro-F1 averages
    # over every class (sklearn on label sets) or only those in truth or prediction (sklearn on labels, seqeval)
    gate_metrics: ClassVar[dict[str, str]]
    macro_over_all: ClassVar[bool] = False

    # --- params -----------------------------------------------------------------------------------------------
    def check(self, params: Params) -> None:
        """Params that only make sense for some tasks: augment operations, evaluate baselines and metric names."""
        if params.augment.enabled:
            wrong = [op for op in params.augment.operations if op not in self.operations]
            if wrong:
                raise PipelineError(f"params.yaml: augment.operations: {wrong} do not fit task {self.name} "
                                    f"(choose from {', '.join(self.operations)})")
        wrong = [b for b in params.evaluate.baselines if b not in self.baselines]
        if wrong:
            raise PipelineError(f"params.yaml: evaluate.baselines: {wrong} do not fit task {self.name} "
                                f"(choose from {', '.join(self.baselines)})")
        for key, value in (("finetune.best_metric", params.finetune.best_metric),
                           ("register.metric", params.register.metric)):
            if value != "auto" and value not in self.metrics:
                raise PipelineError(f"params.yaml: {key}: '{value}' is not a {self.name} metric (choose from auto, "
                                    f"{', '.join(self.metrics)})")
        if self.metric(params.register.metric) not in self.gate_metrics:
            raise PipelineError(f"params.yaml: register.metric: '{params.register.metric}' is not one register's gate "
                                f"can test for {self.name} (choose from auto, {', '.join(self.gate_metrics)})")

    def require_same(self, made_for: str | None, what: str, hint: str) -> None:
        """`what` (data, a model, a registered name) was made for task `made_for`: it must be this one."""
        if made_for is not None and made_for != self.name:
            raise PipelineError(f"{what}: made for {made_for}, but params.yaml task is {self.name} ({hint})")

    def metric(self, value: str) -> str:
        """Resolve 'auto' to the task's default metric."""
        return self.metrics[0] if value == "auto" else value

    def evaluation(self, counts, **fields) -> Evaluation:
        """evaluate's result with `counts` (stages.gate.Counts) and what derives from them: the number of test units
        and `rescore`, the default metric on resampled units (the same sums register's gate resamples)."""
        return Evaluation(**fields, counts=counts, units=len(counts.counts),
                          rescore=counts.rescorer(self.gate_metrics[self.metric("auto")], self.macro_over_all))

    # --- ingest / clean / augment / tokenize -------------------------------------------------------------------
    @abstractmethod
    def read(self, p: IngestParams) -> Any:
        """Shell: read what `ingest.source` names, as `ingest` takes it (errors name file, line/row and column)."""

    @abstractmethod
    def ingest(self, source: Any, p: IngestParams) -> Ingested:
        """Pure core: what `read` returned → three splits, label names, summary."""

    @abstractmethod
    def clean(self, in_dir: Path, out_dir: Path, p: CleanParams) -> dict:
        """Clean the split files of `in_dir` into `out_dir` (with labels.json); returns the report."""

    @abstractmethod
    def augment(self, train: pd.DataFrame, p: AugmentParams, synonyms) -> tuple[pd.DataFrame, dict]:
        """Pure core: the train split plus augmented copies, and the report."""

    @abstractmethod
    def tokenize(self, in_dir: Path, tokenizer, labels: list[str], p: TokenizeParams, scratch: Path):
        """The split files of `in_dir` → (datasets.DatasetDict with input_ids and label, report)."""

    def drift_view(self, df: pd.DataFrame) -> tuple[list[str], list[str]]:
        """For retraining's drift report (stages.drift): each unit's text (what the encoder reads) and the labels the
        units carry, one list over all units (a row's label here)."""
        return df["text"].astype(str).tolist(), df["label"].astype(str).tolist()

    # --- model and training ------------------------------------------------------------------------------------
    auto_model: ClassVar[str]  # the transformers Auto class of the head
    problem_type: ClassVar[str | None] = None  # config.problem_type: picks the loss the model computes

    def load_model(self, name: str, labels: list[str] | None = None, trust=None):
        """The classifier; with `labels`, the pretrained encoder and a fresh head named after them. `trust`:
        stages.loading.Trust, what the model may run or unpickle (default: nothing)."""
        import transformers

        from stages.loading import SAFE, load_pretrained, load_with_new_head

        auto, trust = getattr(transformers, self.auto_model), trust or SAFE
        if labels is None:
            return load_pretrained(auto, name, trust)
        return load_with_new_head(auto, name, trust, num_labels=len(labels), id2label=dict(enumerate(labels)),
                                  label2id={n: i for i, n in enumerate(labels)}, problem_type=self.problem_type)

    def train_rows(self, split):
        """The train rows the loop reads (a datasets.Dataset with input_ids and label, still on its Arrow files), rows
        that teach nothing left out."""
        return split

    def label_column(self, split):
        """The split's label column as pyarrow (no Python lists)."""
        return split.with_format("arrow", columns=["label"])[:]["label"]

    def balanced_weights(self, split, n_labels: int) -> np.ndarray:
        """finetune.class_weights balanced: n / (k x count) per class (sklearn's 'balanced'); 1.0 for a class the
        split lacks (it adds no loss term anyway)."""
        y = self.label_column(split).to_numpy()
        counts = np.bincount(y, minlength=n_labels)
        return np.where(counts > 0, len(y) / (n_labels * np.maximum(counts, 1)), 1.0)

    def class_loss(self, weights):
        """loss(logits, labels) with a weight per class: the model's own cross-entropy, weighted (positions labelled
        IGNORE add nothing)."""
        import torch.nn.functional as F

        def loss(logits, labels):
            return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                   weight=weights.to(logits.device), ignore_index=-100)
        return loss

    @abstractmethod
    def collate(self, targets: list, idx: np.ndarray, width: int):
        """The `labels=` tensor for rows `idx` of a batch padded to `width` positions."""

    @abstractmethod
    def validator(self, split, labels: list[str], p: FinetuneParams, pad_id: int, device) -> Validate:
        """Scores a model on the validation split, once per epoch: loss (the model's own) and the task's metrics."""

    def model_extras(self, model, split, labels: list[str], p: FinetuneParams, pad_id: int, device) -> dict:
        """What serving needs beyond the weights, decided after training (e.g. thresholds): saved in pipeline.json."""
        return {}

    # --- evaluate and serve ------------------------------------------------------------------------------------
    @abstractmethod
    def evaluate(self, inputs: EvalInputs, baselines: list[str], batch_size: int, probe_rows: int) -> Evaluation:
        """Test metrics, baselines, per-class rows and confusion pairs."""

    @abstractmethod
    def predictor(self, path: Path, meta: dict) -> Callable[[list[str]], Any]:
        """Serving: load the model folder `path` (its pipeline.json is `meta`) once; returns predict(texts). The one
        MLflow pyfunc class (stages.serving.Served) calls it, so serving code stays with its task."""

    def load_for_serving(self, path: Path):
        """(model in eval mode on the best device, tokenizer, device) from a fine-tuned folder."""
        from stages.loading import Trust, load_tokenizer
        from stages.modeling import pick_device

        device = pick_device("auto")
        meta = read_json(path / "pipeline.json") if (path / "pipeline.json").exists() else {}
        trust = Trust(remote_code=bool(meta.get("trust_remote_code")))  # what finetune was allowed: its code came along
        return self.load_model(str(path), trust=trust).to(device).eval(), load_tokenizer(str(path), trust), device

    @abstractmethod
    def example_output(self, labels: list[str]):
        """What the pyfunc returns for `examples` (its shape), for the model signature."""
