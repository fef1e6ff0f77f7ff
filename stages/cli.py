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
# MLflow's HTTP client retries a failed request 7 times with backoff 2 s x 2^n (plus up to 1 s jitter each), 120 s per
# attempt: a tracking server that stopped mid-run held a stage ~5 minutes before a urllib3 traceback. These give up
# within ~30 s: 2 retries, sleeping 0 s then 4 s (urllib3 sleeps factor x 2^(n-1), none before the first retry), so a
# refused connection fails in ~5 s, and a server that accepts but never answers in 3 x 10 s + 4 s = ~34 s. The timeout
# is per connect or read wait, not per transfer: an upload that keeps sending is not cut at 10 s; a server that takes
# longer to answer (big artifacts proxied to a slow object store) needs MLFLOW_HTTP_REQUEST_TIMEOUT raised.
MLFLOW_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",  # seconds; an int in MLflow
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",  # seconds per connect / read wait; an int in MLflow
}


def set_env_defaults() -> None:
    """The defaults above (the shell's values win), and credentials out of $MLFLOW_TRACKING_URI into the
    environment (stages.credentials), so no URI this process or its children print carries a password."""
    from stages import credentials

    terminal = {} if sys.stderr.isatty() else NO_TERMINAL_DEFAULTS
    for key, value in (OFFLINE_DEFAULTS | MLFLOW_HTTP_DEFAULTS | terminal).items():
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


def _not_an_mlflow_retry(record: logging.LogRecord) -> bool:
    """urllib3 logs a WARNING per retry of MLflow's HTTP client, each a screen-wide repr: a server that stopped is said
    once, by store_down's line, after the retries (other hosts' retries are still logged)."""
    return not (str(record.msg).startswith("Retrying") and "/mlflow/" in record.getMessage())


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
    logging.getLogger("urllib3.connectionpool").addFilter(_not_an_mlflow_retry)
    try:
        main()
        logging.getLogger(stage).info("done in %.1f s (process wall, start-up and imports included)", _process_seconds())
    except PipelineError as e:
        print(credentials.redact(f"error: {stage}: {e}"), file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"error: {stage}: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:
        from stages.trackguard import store_down

        if (line := store_down(e)) is None:
            raise
        print(credentials.redact(f"error: {stage}: {line}"), file=sys.stderr)
        sys.exit(1)
