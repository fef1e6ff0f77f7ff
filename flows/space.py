"""A sweep's search space: parse --grid / --space, draw seeded trials, check every key and value before anything runs.

Values are strings handed to `dvc exp run -S` as they are; each trial is checked by applying its values to a copy of
params.yaml with DVC's own -S parser and validating the result with the params models, so what is checked is what DVC
will write. A grid and a seeded random search need nothing beyond numpy: Optuna would earn its place with a Bayesian
sampler or pruning, which a handful of trials of a few minutes each does not need.
"""

from __future__ import annotations

import itertools
import math
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from stages.io import PipelineError
from stages.params import PARAMS_FILE, Params, load_params

TARGET = "finetune"  # trials stop here: evaluate (the test split) runs once, on the winner, under `dvc repro`
DVC_FILE = Path("dvc.yaml")
NOT_SWEPT = {"task": "one sweep per task: the task decides the data and the metrics",
             "finetune.best_metric": "trials are compared on one validation metric"}
RANGE = re.compile(r"(?P<lo>[^:]+):(?P<hi>[^:]+)(?P<log>:log)?")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a git ref component: DVC keeps each experiment as a ref


def dotted(d: dict, key: str) -> Any:
    for part in key.split("."):
        d = d[part]
    return d


def split_values(text: str, where: str) -> list[str]:
    """`a,b,c` → [a, b, c]; a comma inside [...] belongs to a list value: `[query,value],[query,key,value]`."""
    values = [v.strip() for v in re.split(r",(?![^\[]*\])", text)]
    if "" in values:
        raise PipelineError(f"{where}: an empty value")
    return values


def _key_values(specs: list[str], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for spec in specs:
        key, eq, values = (s.strip() for s in spec.partition("="))
        if not eq or not key or not values:
            raise PipelineError(f"{option} {spec}: expected KEY=VALUES")
        if key in out:
            raise PipelineError(f"{option} {key}: given twice")
        check_key(key)
        out[key] = values
    return out


def check_key(key: str) -> None:
    """A key the params models know (a misspelt key is an error) and that finetune or a stage before it reads."""
    model = Params
    for part in key.split("."):
        fields = getattr(model, "model_fields", None) or {}
        if part not in fields:
            raise PipelineError(f"{key}: unknown key (misspelt?)")
        model = fields[part].annotation
    if key in NOT_SWEPT:
        raise PipelineError(f"{key}: not a sweep key ({NOT_SWEPT[key]})")
    stages = (yaml.safe_load(DVC_FILE.read_text()) or {}).get("stages", {}) if DVC_FILE.exists() else {}
    if TARGET not in stages:
        raise PipelineError(f"{DVC_FILE}: no stage {TARGET} (run from the project root)")
    upto = list(stages)[: list(stages).index(TARGET) + 1]  # dvc.yaml's order is the DAG's (flows.pipeline runs it so)
    read = [p for name in upto for p in stages[name].get("params", []) if isinstance(p, str)]
    if not any(key == p or key.startswith(f"{p}.") for p in read):
        raise PipelineError(f"{key}: no stage up to {TARGET} reads it, so every trial would train the same model")


def _number(text: str) -> int | float | None:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return None


def parse_space(space: dict[str, str]) -> dict[str, tuple | list[str]]:
    """--space KEY=LO:HI[:log] (a range: integers when both ends are) or KEY=A,B,C (choices)."""
    dims: dict[str, tuple | list[str]] = {}
    for key, text in space.items():
        m = RANGE.fullmatch(text) if "," not in text else None
        lo, hi = (_number(m["lo"]), _number(m["hi"])) if m else (None, None)
        if lo is None or hi is None:  # `packaged:all-MiniLM-L6-v2` is one choice, not a range
            dims[key] = split_values(text, f"--space {key}={text}")
        elif lo >= hi or (m["log"] and lo <= 0):
            raise PipelineError(f"--space {key}={text}: expected LO < HI (and LO > 0 with :log)")
        else:
            dims[key] = (lo, hi, bool(m["log"]))
    return dims


def draw(dims: dict[str, tuple | list[str]], n: int, seed: int) -> list[dict[str, str]]:
    """`n` trials, each key drawn in turn from one seeded generator: the same seed gives the same trials."""
    import numpy as np

    rng = np.random.default_rng(seed)
    trials = []
    for _ in range(n):
        trial = {}
        for key, dim in dims.items():
            if isinstance(dim, list):
                trial[key] = dim[int(rng.integers(len(dim)))]
                continue
            lo, hi, log = dim
            if isinstance(lo, int) and isinstance(hi, int):  # both ends included
                x = round(math.exp(rng.uniform(math.log(lo), math.log(hi)))) if log else int(rng.integers(lo, hi + 1))
                trial[key] = str(x)
            else:  # 3 significant digits: all a learning rate needs, and the params stay readable
                trial[key] = f"{math.exp(rng.uniform(math.log(lo), math.log(hi))) if log else rng.uniform(lo, hi):.3g}"
        trials.append(trial)
    return trials


def resolve(trials: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Each trial's values as DVC's -S writes them into params.yaml (its own parser, on a copy), validated: typed."""
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.hydra import apply_overrides

    load_params(PARAMS_FILE)  # the base file itself first: a missing or broken one is its own error
    values = []
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / PARAMS_FILE.name
        for trial in trials:
            sets = [f"{k}={v}" for k, v in trial.items()]
            shutil.copy2(PARAMS_FILE, copy)
            try:
                apply_overrides(copy, sets)
                dumped = load_params(copy).model_dump(mode="json")
            except InvalidArgumentError as e:
                raise PipelineError(f"-S {' '.join(sets)}: {str(e.__cause__ or e).strip().splitlines()[0]}") from None
            except PipelineError as e:
                raise PipelineError(f"-S {' '.join(sets)}: {str(e).removeprefix(f'{copy}: ')}") from None
            values.append({k: dotted(dumped, k) for k in trial})
    return values


def plan(grid: list[str], n_random: int | None, space: list[str], seed: int, name: str) -> dict:
    """The sweep flow's parameters: each trial's -S values as given and as typed, the space as given. One line on any
    problem, before anything runs."""
    if not NAME.fullmatch(name):
        raise PipelineError(f"--name {name}: letters, digits, '.', '_' and '-' only (it names git refs)")
    if grid and (n_random or space):
        raise PipelineError("--grid, or --random N with --space: not both")
    if grid:
        axes = _key_values(grid, "--grid")
        trials = [dict(zip(axes, combo)) for combo in itertools.product(*(split_values(v, f"--grid {k}={v}") for k, v in axes.items()))]
        described, seed = axes, None
    elif n_random is not None and space:
        if n_random < 1:
            raise PipelineError(f"--random {n_random}: at least 1 trial")
        described = _key_values(space, "--space")
        trials = draw(parse_space(described), n_random, seed)
    else:
        raise PipelineError("nothing to search: --grid KEY=V1,V2,... (repeatable), or --random N with --space "
                            "KEY=LO:HI[:log] / KEY=A,B,C")
    unique = list({tuple(t.items()): t for t in trials}.values())  # a repeated draw would only train the same model
    return {"name": name, "search": "grid" if grid else "random", "space": described, "seed": seed,
            "trials": unique, "values": resolve(unique)}
