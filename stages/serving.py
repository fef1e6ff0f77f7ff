"""The one MLflow pyfunc model: raw texts in, the task's predictions out.

register logs it with `code_paths=["stages"]` and the fine-tuned folder as the `model` artifact, so any process with
the pinned requirements can `mlflow.pyfunc.load_model("models:/<name>@champion").predict(["a gem of a film"])`. What
a prediction is (labels and probabilities, entity spans, label sets) is the task's (`Task.predictor`), read from the
folder's pipeline.json.
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


class Served(mlflow.pyfunc.PythonModel):
    """Loads the fine-tuned HF folder logged as the `model` artifact and hands texts to its task's predictor."""

    def load_context(self, context) -> None:
        from stages import tasks

        path = Path(context.artifacts["model"])
        meta = json.loads((path / "pipeline.json").read_text())
        self._predict = tasks.get(meta["task"]).predictor(path, meta)

    def predict(self, context, model_input, params=None):
        return self._predict(as_texts(model_input))
