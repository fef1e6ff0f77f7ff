"""The task interface: one module per task, looked up once; no stage, flow or benchmark branches on the task name,
and the project's modules import each other without cycles."""

import ast
import re

import pytest

from stages import tasks
from stages.io import PipelineError
from stages.tasks.base import Task
from tests.test_params import ROOT

# `if params.task == TOKEN_TASK`, `task != "x"`, `task in (...)`, the old constants: what a task branch looks like
BRANCH = re.compile(r"\btask(?:\.name)?\s*(?:==|!=|\bin\b)|(?:==|!=)\s*\w*\.?task\b|\b(?:SEQUENCE|TOKEN|MULTILABEL)_TASK\b")


def test_no_task_branches_outside_the_task_modules():
    found = []
    for folder in ("stages", "flows", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.is_relative_to(ROOT / "stages/tasks"):
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if BRANCH.search(line.split("#")[0]):
                    found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "task branches:\n" + "\n".join(found)


@pytest.mark.parametrize("line", ['if params.task == TOKEN_TASK:', 'if task != "x":', "elif task.name in names:",
                                  "if SEQUENCE_TASK:", "ok = 'token' == cfg.task"])
def test_the_branch_pattern_catches_what_it_must(line):
    assert BRANCH.search(line)


def import_graph() -> dict[str, set[str]]:
    """Project module → the project modules it names in an import statement (module level or in a function)."""
    files = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
             for folder in ("stages", "flows") for p in (ROOT / folder).rglob("*.py")}
    graph = {}
    for name, path in files.items():
        named = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                named |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = {f"{node.module}.{a.name}" for a in node.names} & set(files)
                named |= subs or {node.module}  # `from stages import tasks` names stages.tasks
        graph[name] = named & set(files) - {name}
    return graph


def test_no_import_cycles():
    """No project module reaches itself through the imports it names (at import time or inside functions). A
    package's __init__ importing its own submodules is how a package works, not a cycle, so parents are not edges."""
    graph = import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for nxt in sorted(graph[name]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " → ".join(path[path.index(nxt):] + [name, nxt]))
            if nxt not in state:
                visit(nxt, path + [name])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_every_task_implements_the_interface():
    for name, cls in tasks.TASKS.items():
        task = tasks.get(name)
        assert isinstance(task, Task) and task.name == name and not getattr(cls, "__abstractmethods__", None)
        assert task.metric("auto") == task.metrics[0] and task.operations and task.examples


def test_unknown_task_and_task_params_are_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text("task: sentiment\n")
    with pytest.raises(PipelineError, match=r"task: unknown task 'sentiment' \(choose from sequence_classification, "):
        tasks.load(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("task: token_classification\naugment:\n  enabled: true\n  operations: [insert]\n")
    with pytest.raises(PipelineError, match=r"augment.operations: \['insert'\] do not fit task token_classification"):
        tasks.load(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("task: multilabel_classification\nregister:\n  metric: f1\n")
    with pytest.raises(PipelineError, match=r"register.metric: 'f1' is not a multilabel_classification metric"):
        tasks.load(tmp_path / "params.yaml")


def test_the_model_computes_its_own_loss_and_the_loop_names_none():
    source = (ROOT / "stages/training.py").read_text() + (ROOT / "stages/finetune.py").read_text()
    assert "cross_entropy" not in source and "BCEWithLogits" not in source and ".loss" in source
    for path in (ROOT / "stages").rglob("*.py"):
        assert "functional.cross_entropy" not in path.read_text(), path
