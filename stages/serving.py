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


EXPECTED = ("a string, a list of strings, or a DataFrame with a 'text' column of strings (REST: {\"inputs\": "
            "[\"...\"]} or {\"dataframe_split\": {\"columns\": [\"text\"], ...}})")


def bad_input(message: str) -> Exception:
    """An input error: MLflow's scoring server answers it with HTTP 400 and the message; Python raises it."""
    from mlflow.exceptions import INVALID_PARAMETER_VALUE, MlflowException

    return MlflowException(f"{message}; expected {EXPECTED}", error_code=INVALID_PARAMETER_VALUE)


def as_texts(model_input, allow_empty: bool = False) -> list[str]:
    """The texts in `model_input`: a string, a list/array/Series of strings, or a DataFrame's `text` column (MLflow
    hands a list as a DataFrame with column 0). Anything else is an error naming what was expected, never a guess:
    not another column (an id), not the string form of a list, None or a number; nor an empty text unless the task
    has an honest answer for it (`allow_empty`: NER finds no entities; a classifier would invent a label)."""
    import pandas as pd

    if isinstance(model_input, str):
        model_input = [model_input]
    elif isinstance(model_input, dict):
        raise bad_input(f"got a dict with keys {list(model_input)[:5]}")
    if isinstance(model_input, pd.DataFrame):
        cols = list(model_input.columns)
        if "text" in cols:
            model_input = model_input["text"]
        elif cols == [0]:
            model_input = model_input[0]
        else:
            raise bad_input(f"got a DataFrame with columns {cols[:5]} and no 'text' column")
    texts = list(model_input)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise bad_input(f"input row {i}: got {type(t).__name__} {str(t)[:40]!r}, not a string")
        if not allow_empty and not t.strip():
            raise bad_input(f"input row {i}: empty text (nothing to classify: drop it)")
    return texts


class Served(mlflow.pyfunc.PythonModel):
    """Loads the fine-tuned HF folder logged as the `model` artifact and hands texts to its task's predictor."""

    def load_context(self, context) -> None:
        from stages import tasks

        path = Path(context.artifacts["model"])
        meta = json.loads((path / "pipeline.json").read_text())
        task = tasks.get(meta["task"])
        self._predict, self._allow_empty = task.predictor(path, meta), task.answers_empty_text

    def predict(self, context, model_input, params=None):
        return self._predict(as_texts(model_input, self._allow_empty))
