"""The MLflow pyfunc models: raw texts in; label names and probabilities (classification) or entity spans (NER) out.

Logged by register with `code_paths=["stages"]`, so any process with the pinned requirements can
`mlflow.pyfunc.load_model("models:/<name>@champion").predict(["a gem of a film"])`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlflow.pyfunc


def as_texts(model_input) -> list[str]:
    """Accept a string, a list/array/Series of strings, or a DataFrame (column `text`, else the first)."""
    import pandas as pd

    if isinstance(model_input, str):
        return [model_input]
    if isinstance(model_input, pd.DataFrame):
        col = "text" if "text" in model_input.columns else model_input.columns[0]
        return model_input[col].astype(str).tolist()
    return [str(t) for t in list(model_input)]


class FineTuned(mlflow.pyfunc.PythonModel):
    """Loads the fine-tuned HF folder logged as the `model` artifact, with its pipeline.json."""

    task = "sequence_classification"

    def load_context(self, context) -> None:
        from stages.modeling import load_classifier, load_tokenizer, pick_device

        path = Path(context.artifacts["model"])
        meta = json.loads((path / "pipeline.json").read_text())
        self.max_length, self.labels = meta["max_length"], meta["labels"]
        self.device = pick_device("auto")
        self.tokenizer = load_tokenizer(str(path))
        self.model = load_classifier(str(path), task=self.task).to(self.device).eval()


class TextClassifier(FineTuned):
    """Sequence classification: raw texts in; a DataFrame of label, score and prob_<label> columns out."""

    def predict(self, context, model_input, params=None):
        import numpy as np
        import pandas as pd
        import torch

        from stages.modeling import predict_logits

        texts = as_texts(model_input)
        if not texts:
            return pd.DataFrame(columns=["label", "score"] + [f"prob_{n}" for n in self.labels])
        seqs = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        logits = predict_logits(self.model, seqs, 64, self.tokenizer.pad_token_id, self.device)
        probs = torch.softmax(torch.from_numpy(logits), -1).numpy()
        out = pd.DataFrame({"label": np.asarray(self.labels)[probs.argmax(-1)], "score": probs.max(-1)})
        for i, name in enumerate(self.labels):
            out[f"prob_{name}"] = probs[:, i]
        return out


# Raw text → words the way CoNLL-style training data splits them: abbreviations (U.S.) whole, a
# possessive 's apart, hyphenated/dotted words whole, every other punctuation mark a word of its own.
WORD = re.compile(r"(?:[A-Za-z]\.){2,}|'[sS]\b|\w+(?:[-.&]\w+)*|[^\w\s]")


def split_words(text: str) -> list[tuple[str, int, int]]:
    """(word, start, end) character offsets of each word of `text`."""
    return [(m.group(), m.start(), m.end()) for m in WORD.finditer(text)]


def entity_spans(text: str, words: list[tuple[str, int, int]], tags: list[str], probs) -> list[dict]:
    """Word tags → entity dicts with character offsets into `text` (end exclusive) and the mean word probability."""
    from stages.iob import spans

    out = []
    for kind, first, end in spans(tags):
        start, stop = words[first][1], words[end - 1][2]
        out.append({"type": kind, "start": start, "end": stop, "text": text[start:stop],
                    "score": round(float(sum(probs[first:end]) / (end - first)), 4)})
    return out


class EntityTagger(FineTuned):
    """Token classification: raw texts in; per text, a list of entity spans out:
    {"type", "start", "end", "text", "score"} with character offsets into the input text (end exclusive)
    and score = the mean probability of the span's word tags. Texts longer than the model's window are
    cut into windows between words, as in training, and put back together."""

    task = "token_classification"

    def load_context(self, context) -> None:
        from stages.align import Wrapper

        super().load_context(context)
        self.wrap = Wrapper.of(self.tokenizer)

    def predict(self, context, model_input, params=None) -> list[list[dict]]:
        from stages.align import AlignStats, align, word_pieces
        from stages.entities import word_predictions
        from stages.iob import OUTSIDE
        from stages.modeling import predict_token_logits

        texts = as_texts(model_input)
        words = [split_words(t) for t in texts]
        budget, stats, windows = self.max_length - self.wrap.n_special, AlignStats(), []
        for i, pieces in enumerate(word_pieces(self.tokenizer, [[w for w, _, _ in ws] for ws in words]) if texts else []):
            windows.extend(align(pieces, None, i, budget, self.wrap, None, stats))
        logits = predict_token_logits(self.model, [w.input_ids for w in windows], 64, self.tokenizer.pad_token_id, self.device)
        ids, probs = word_predictions(logits, [w.words for w in windows], [w.sentence for w in windows],
                                      [len(ws) for ws in words], self.labels.index(OUTSIDE))
        return [entity_spans(text, ws, [self.labels[t] for t in tag_ids], p)
                for text, ws, tag_ids, p in zip(texts, words, ids, probs)]
