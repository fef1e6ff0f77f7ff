"""The one MLflow pyfunc model: raw texts in, the task's predictions out.

register logs it with `code_paths=["stages"]` and the fine-tuned folder as the `model` artifact, so any process with
the pinned requirements can `mlflow.pyfunc.load_model("models:/<name>@champion").predict(["a gem of a film"])`. What
a prediction is (labels and probabilities, entity spans, label sets) is the task's (`Task.predictor`), read from the
folder's pipeline.json.

The input contract, the same in Python and over REST (`mlflow models serve`; an MlflowException with
INVALID_PARAMETER_VALUE is the server's HTTP 400 with our message):
- texts only: a non-string row (a number, null/None/NaN, a list) is refused, naming the row; nothing is stringified;
- an empty or blank text is refused by the classifiers (any label would be invented); NER answers it with no entities;
- a text longer than the model's max_length is read up to it: classifiers say so in a `truncated` column; NER windows
  long texts between words and cuts nothing;
- a DataFrame's texts are its `text` column, which must be its first: MLflow's input schema hands on only that one;
- an empty DataFrame returns no rows; a bare empty list `[]` is refused by MLflow's own schema check ("missing
  inputs"), in Python and over REST alike (see `Served.signature` for why the schema stays).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlflow.pyfunc
import pandas as pd

EXPECTED = ("a string, a list of strings, or a DataFrame with a 'text' column of strings (REST: {\"inputs\": "
            "[\"...\"]} or {\"dataframe_split\": {\"columns\": [\"text\"], ...}})")


def bad_input(message: str) -> Exception:
    """An input error: MLflow's scoring server answers it with HTTP 400 and the message; Python raises it."""
    from mlflow.exceptions import INVALID_PARAMETER_VALUE, MlflowException

    return MlflowException(f"{message}; expected {EXPECTED}", error_code=INVALID_PARAMETER_VALUE)


def describe(value) -> str:
    """A non-string row as the caller sent it: pandas holds a JSON null as None or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "a missing value (null/None/NaN)"
    return f"{type(value).__name__} {str(value)[:40]!r}"


def blank(text: str) -> bool:
    """Nothing to read: only whitespace or invisible characters (a zero-width space tokenizes to no token at all)."""
    return not any(c.isprintable() and not c.isspace() for c in text)


def as_texts(model_input, allow_empty: bool = False) -> list[str]:
    """The texts in `model_input`: a string, a list/array/Series of strings, or a DataFrame's `text` column (MLflow
    hands a list as a DataFrame with column 0). Anything else is an error naming what was expected, never a guess:
    not another column (an id), not the string form of a list, None or a number; nor an empty text unless the task
    has an honest answer for it (`allow_empty`: NER finds no entities; a classifier would invent a label). No texts
    (an empty DataFrame) give no predictions: an empty batch is not an error, a batch job need not special-case it."""
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
            # the served model's input schema (Served.signature) hands on a DataFrame's first column only
            raise bad_input(f"got a DataFrame with columns {cols[:5]} and no 'text' column (served models read the "
                            "first column: put 'text' first)")
    texts = list(model_input)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise bad_input(f"input row {i}: got {describe(t)}, not a string")
        if not allow_empty and blank(t):
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

    # The annotation is one MLflow takes as "no schema from type hints": without one it warns at every import (in
    # register and in each process that loads the model); the signature logged (below) is what MLflow checks.
    def predict(self, context, model_input: pd.DataFrame, params=None):
        return self._predict(as_texts(model_input, self._allow_empty))

    @staticmethod
    def signature(inferred):
        """The signature to log: `inferred`'s outputs (what the UI shows) and one unnamed input column of any type.
        Not infer_signature's `[string]`: with it the scoring server casts a JSON list with numpy's str before the model
        runs, so `{"inputs": [1, null]}` got 200 and predictions for "1" and "None" while Python refused it. Not no
        input schema: the server then makes `np.array(list)`, which turns ["a", 1] into strings as well. With `Any`
        values arrive as sent and `as_texts` is the one check, in Python and over REST. The price: the UI shows the
        input as `[Any]` (the input example still shows strings); as with `[string]`, MLflow hands on only a
        DataFrame's first column and refuses a bare `[]` (no column) before the model runs."""
        from mlflow.models import ModelSignature
        from mlflow.types.schema import AnyType, ColSpec, Schema

        return ModelSignature(Schema([ColSpec(AnyType())]), inferred.outputs, inferred.params)
