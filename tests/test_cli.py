"""Entry-point defaults: offline switches always, progress bars only on a terminal."""

import io
import os
import sys

from stages import cli


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_off_in_logs_on_in_a_terminal(monkeypatch):
    for key in (*cli.OFFLINE_DEFAULTS, *cli.NO_TERMINAL_DEFAULTS):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a log file, CI, the flow's pipe
    cli.set_env_defaults()
    assert {k: os.environ[k] for k in cli.NO_TERMINAL_DEFAULTS} == cli.NO_TERMINAL_DEFAULTS
    for key in cli.NO_TERMINAL_DEFAULTS:
        monkeypatch.delenv(key)
    monkeypatch.setattr(sys, "stderr", Terminal())
    cli.set_env_defaults()
    assert not any(k in os.environ for k in cli.NO_TERMINAL_DEFAULTS)
    assert os.environ["HF_HUB_OFFLINE"] == "1"
