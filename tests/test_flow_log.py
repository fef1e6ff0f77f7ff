"""The flow relays each stage's `dvc repro` output to Prefect's log: the stage's lines, not DVC's advice."""

import subprocess

from flows.pipeline import dvc
from tests.conftest import project_env


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, line: str) -> None:
        self.lines.append(line)


def test_dvc_advice_is_not_relayed_after_every_stage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for key, value in project_env().items():
        monkeypatch.setenv(key, value)
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(cmd, check=True)
    (tmp_path / "dvc.yaml").write_text("stages:\n  hello:\n    cmd: echo said-by-the-stage > out.txt && "
                                       "echo said-by-the-stage\n    outs: [out.txt]\n")
    log = Lines()
    dvc("repro", "--single-item", "hello", log=log)
    said = "\n".join(log.lines)
    assert "said-by-the-stage" in said and "Running stage 'hello'" in said
    assert "git add" not in said and "autostage" not in said and "dvc push" not in said, said
