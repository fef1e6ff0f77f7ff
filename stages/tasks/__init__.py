"""The tasks the pipeline knows, one module each behind one interface (`stages.tasks.base.Task`).

Every stage starts with `params, task = tasks.load()` and calls the task; none asks which task it has. Adding a task
is one module here (a `Task` subclass) listed in TASKS, plus its tests.
"""

from __future__ import annotations

from pathlib import Path

from stages.io import PipelineError
from stages.params import PARAMS_FILE, Params, load_params
from stages.tasks.base import Task
from stages.tasks.multilabel import MultiLabelClassification
from stages.tasks.sequence import SequenceClassification
from stages.tasks.token import TokenClassification

TASKS: dict[str, type[Task]] = {t.name: t for t in (SequenceClassification, TokenClassification,
                                                    MultiLabelClassification)}


def get(name: str) -> Task:
    if name not in TASKS:
        raise PipelineError(f"params.yaml: task: unknown task '{name}' (choose from {', '.join(TASKS)})")
    return TASKS[name]()


def load(path: Path = PARAMS_FILE) -> tuple[Params, Task]:
    """params.yaml, validated, and its task, with the params that only some tasks accept checked against it."""
    params = load_params(path)
    task = get(params.task)
    task.check(params)
    return params, task
