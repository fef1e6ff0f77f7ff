"""Roll the champion back: move the `champion` alias to the version it replaced (`previous`) or a named one, and
record why on both versions and in the registered model's history.

    python -m flows.rollback --reason "complaints about sarcasm since v7"
    python -m flows.rollback --to 3 --reason "..."          # any earlier version of the same task and labels

The names come from params.yaml (`register.model_name` and its aliases) unless given. Runs under register's registry
lock, so it cannot interleave with a pipeline deciding the aliases. After it, `previous` is removed: a second rollback
names its target with --to, rather than toggling between two versions.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

from stages.io import PipelineError

log = logging.getLogger(__name__)


def rollback(model_name: str, reason: str, to: str | None, aliases: tuple[str, str]) -> dict:
    """Move `champion` to `to` (default: the `previous` alias) and tag why; returns what was done."""
    from mlflow.exceptions import MlflowException

    from stages import registry

    champion_alias, previous_alias = aliases
    with registry.lock(model_name):
        current, previous = (registry.alias_version(model_name, a) for a in (champion_alias, previous_alias))
        target = to or (previous and previous.version)
        if target is None:
            raise PipelineError(f"{model_name} has no '{previous_alias}' alias (no promotion has replaced a champion, "
                                "or a rollback used it): name the version with --to")
        target = str(target)
        try:
            mv = registry.client().get_model_version(model_name, target)
        except MlflowException:
            raise PipelineError(f"{model_name} has no version {target}") from None
        if current is not None and str(current.version) == target:
            raise PipelineError(f"version {target} is already the {champion_alias} of {model_name}")
        if current is not None:
            old, new = registry.facts(current, "accuracy"), registry.facts(mv, "accuracy")
            if (old.made_for, old.labels) != (new.made_for, new.labels):
                raise PipelineError(f"version {target} was made for another task or label set than the "
                                    f"{champion_alias} (version {current.version}): it cannot serve in its place")
        when = time.strftime("%Y-%m-%d %H:%M:%S %z")
        registry.set_alias(model_name, champion_alias, target)
        if previous is not None and str(previous.version) == target:  # `previous` is used up
            registry.client().delete_registered_model_alias(model_name, previous_alias)
        registry.tag_version(model_name, target, {"restored_as_champion": f"{when}: {reason}"})
        if current is not None:
            registry.tag_version(model_name, str(current.version), {"rolled_back": f"{when}: {reason} "
                                                                                  f"(champion now version {target})"})
        done = {"model_name": model_name, "champion": target, "replaced": current and str(current.version),
                "reason": reason, "at": when}
        history = json.loads(registry.client().get_registered_model(model_name).tags.get("rollbacks", "[]"))
        registry.client().set_registered_model_tag(model_name, "rollbacks", json.dumps(history + [done]))
    return done


def main(argv: list[str] | None = None) -> None:
    from stages import tracking
    from stages.params import load_params

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reason", required=True, help="why: recorded on both versions and the registered model")
    ap.add_argument("--to", help="the version to restore (default: the 'previous' alias)")
    ap.add_argument("--model-name", help="default: params.yaml register.model_name")
    args = ap.parse_args(argv)
    p = load_params().register
    tracking.check_server()
    done = rollback(args.model_name or p.model_name, args.reason, args.to, (p.champion_alias, p.previous_alias))
    log.info("%s: the champion is version %s again (was %s): %s", done["model_name"], done["champion"],
             done["replaced"], done["reason"])


if __name__ == "__main__":
    from stages.cli import run

    run(main, "rollback")
