"""Entry-point plumbing shared by every stage and flow: offline defaults and one-line errors."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator

# This machine (and CI) reaches no hub; users who are online can override each of these.
OFFLINE_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "TOKENIZERS_PARALLELISM": "false",  # torch owns the cores while training; the tokenize stage turns it on
    # Prefect's temporary server (a flow run without `prefect server start`) gets 20 s to start by default: too
    # little on a loaded 2-core machine, where the flow then failed before any stage ran.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}
# Progress bars in a log (CI, the flow, `make run > log`) are hundreds of carriage-returned frames; on a terminal they
# stay. The stages log their own progress lines instead (training per epoch, evaluate once a minute).
NO_TERMINAL_DEFAULTS = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' weight loading/saving bars use the hub's switch
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def set_env_defaults() -> None:
    """The defaults above (the shell's values win), and credentials out of $MLFLOW_TRACKING_URI into the
    environment (stages.credentials), so no URI this process or its children print carries a password."""
    from stages import credentials

    for key, value in (OFFLINE_DEFAULTS | ({} if sys.stderr.isatty() else NO_TERMINAL_DEFAULTS)).items():
        os.environ.setdefault(key, value)
    credentials.move_to_env()


@contextlib.contextmanager
def without_log_lines(logger: str, containing: str) -> Iterator[None]:
    """Drop a library's log records that contain `containing` while the block runs (a filter, not a level: some
    libraries branch on their logger's level, and other lines of that logger still matter)."""
    def keep(record: logging.LogRecord) -> bool:
        return containing not in str(record.msg)

    target = logging.getLogger(logger)
    target.addFilter(keep)
    try:
        yield
    finally:
        target.removeFilter(keep)


def _process_seconds() -> float:
    """Seconds since this process started: a stage's own time as the flow and bench/ count it."""
    import time

    import psutil

    return time.time() - psutil.Process().create_time()


def run(main: Callable[[], None], stage: str) -> None:
    """Run a stage's shell; a PipelineError (or a bad param) prints one line and exits 1."""
    from stages import credentials
    from stages.io import PipelineError

    set_env_defaults()
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {stage}: %(message)s", datefmt="%H:%M:%S")
    credentials.redact_logging()
    try:
        main()
        logging.getLogger(stage).info("done in %.1f s (process wall, start-up and imports included)", _process_seconds())
    except PipelineError as e:
        print(credentials.redact(f"error: {stage}: {e}"), file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"error: {stage}: interrupted", file=sys.stderr)
        sys.exit(130)
