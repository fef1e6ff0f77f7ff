"""The MLflow pyfunc model: raw texts in; label names and probabilities out.

Logged by register with `code_paths=["stages"]`, so any process with the pinned requirements can
`mlflow.pyfunc.load_model("models:/<name>@champion").predict(["a gem of a film"])`.
"""

from __future__ import annotations

import json
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


class TextClassifier(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from stages.modeling import load_classifier, load_tokenizer, pick_device

        path = Path(context.artifacts["model"])
        meta = json.loads((path / "pipeline.json").read_text())
        self.max_length, self.labels = meta["max_length"], meta["labels"]
        self.device = pick_device("auto")
        self.tokenizer = load_tokenizer(str(path))
        self.model = load_classifier(str(path)).to(self.device).eval()

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
