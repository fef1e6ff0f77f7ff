"""params.yaml, the params models and dvc.yaml agree; bad params fail with one clear line."""

import ast
from pathlib import Path

import pytest
import yaml

from stages.io import PipelineError
from stages.params import Params, load_params

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["ingest", "clean", "augment", "tokenize", "pretrain", "finetune", "evaluate", "register"]


def test_params_yaml_validates_and_spells_every_field():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = load_params(ROOT / "params.yaml")
    assert set(raw) == set(Params.model_fields)  # no section missing or extra
    for section, model in params:
        if hasattr(model, "model_fields"):  # each section lists every field: params.yaml is the reference
            assert set(raw[section]) == set(type(model).model_fields), section


def test_dvc_yaml_has_one_stage_per_module_and_section():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert list(dvc) == STAGES
    for name, stage in dvc.items():
        assert stage["cmd"] == f"python -m stages.{name}"
        assert (ROOT / "stages" / f"{name}.py").exists()
        assert name in stage["params"], f"{name} must depend on its own params section"
        sections = {p.split(".")[0] for p in stage["params"]}
        assert sections <= set(Params.model_fields), name
    produced: set[str] = set()  # outputs of the stages before this one, in dvc.yaml's order
    for name, stage in dvc.items():
        for dep in stage["deps"]:
            assert dep in produced or (ROOT / dep).exists(), f"{name}: dep {dep} is neither a repo file nor an earlier output"
        for kind in ("outs", "metrics", "plots"):
            produced |= {next(iter(o)) if isinstance(o, dict) else o for o in stage.get(kind, [])}


def module_file(name: str) -> Path | None:
    """The project file of module `name` (a package's __init__.py), or None for a library."""
    base = ROOT / Path(*name.split("."))
    return next((f for f in (base.with_suffix(".py"), base / "__init__.py") if f.exists()), None)


def import_closure(module: str) -> set[str]:
    """Project files that running `module` imports, transitively: imports at module level and inside functions alike,
    and each package's __init__.py on the way (Python runs it first)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # stages, stages.tasks, stages.tasks.token
            path = module_file(".".join(parts[:i]))
            if path is None or str(path.relative_to(ROOT)) in seen:
                continue
            seen.add(str(path.relative_to(ROOT)))
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    todo.extend(a.name for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    todo.append(node.module)
                    todo.extend(f"{node.module}.{a.name}" for a in node.names)  # `from stages import tasks`
    return seen


def test_each_stage_depends_on_exactly_the_modules_it_imports():
    """dvc.yaml deps of a stage = the project modules it imports, transitively: an edit to any of them re-runs it,
    and no other edit does."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in dvc.items():
        declared = {d for d in stage["deps"] if d.endswith(".py")}
        want = import_closure(f"stages.{name}")
        assert declared == want, f"{name}: missing {sorted(want - declared)}, extra {sorted(declared - want)}"


def test_the_closure_follows_function_level_imports():
    closure = import_closure("stages.register")
    assert {"stages/register.py", "stages/tasks/__init__.py", "stages/tasks/multilabel.py", "stages/serving.py",
            "stages/__init__.py"} <= closure


def write(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_misspelt_key_is_an_error(tmp_path):
    with pytest.raises(PipelineError, match=r"params.yaml: finetune.learning_rat: unknown key"):
        load_params(write(tmp_path, "finetune:\n  learning_rat: 3.0e-5\n"))


def test_ill_typed_param_is_an_error(tmp_path):
    with pytest.raises(PipelineError, match=r"finetune.epochs: .*integer"):
        load_params(write(tmp_path, "finetune:\n  epochs: three\n"))


def test_out_of_range_param_is_an_error(tmp_path):
    with pytest.raises(PipelineError, match=r"ingest.test_size"):
        load_params(write(tmp_path, "ingest:\n  test_size: 0.9\n"))


def test_invalid_yaml_names_line(tmp_path):
    with pytest.raises(PipelineError, match=r"params.yaml: line 3, column 2: invalid YAML"):
        load_params(write(tmp_path, "finetune:\n  epochs: 3\n learning_rate: 1\n"))


def test_missing_params_file(tmp_path):
    with pytest.raises(PipelineError, match="not found"):
        load_params(tmp_path / "nope.yaml")
