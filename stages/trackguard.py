"""Guards around the MLflow store: is it there before a stage loads anything (`check_server`), and which runs a killed
stage left RUNNING (`close_dangling`).

Without the first, a stage pointed at a server that is down loaded its model, then waited out MLflow's retries (~5
minutes) and died with a urllib3 traceback. Without the second, every SIGKILLed finetune left a run RUNNING forever.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from urllib.parse import urlsplit

from stages import credentials
from stages.io import PipelineError

TIMEOUT_S = 5.0  # one request (or connect) this long at most: a server that is up answers /health in milliseconds
HEALTH, SEARCH = "/health", "/api/2.0/mlflow/experiments/search"  # SEARCH: a server behind a proxy that hides /health
DATABASES = {"postgresql": {"psycopg2": "connect_timeout", "psycopg": "connect_timeout", "pg8000": "timeout"},
             "mysql": {"pymysql": "connect_timeout", "mysqldb": "connect_timeout"},
             "mssql": {"pyodbc": "timeout", "pymssql": "login_timeout"}}  # dialect → driver → its connect-timeout arg
# A run RUNNING on another machine is closed only when it started this long ago: its process cannot be asked, and
# a training run of many days is possible (it would end its run FINISHED anyway; closing only sets the status).
FOREIGN_AGE_S = 7 * 24 * 3600
STAGE, INPUTS, HOST, PID = "pipeline.stage", "pipeline.inputs_key", "pipeline.host", "pipeline.pid"
log = logging.getLogger(__name__)


def _chain(exc: BaseException | None) -> list[BaseException]:
    """`exc` and the exceptions it was raised from or during, innermost last."""
    seen: list[BaseException] = []
    while exc is not None and exc not in seen and len(seen) < 20:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def connection_problem(exc: BaseException, timeout: float | None = None) -> str | None:
    """What kept a request from its server, in a few words ("connection refused"), when `exc` or an exception it came
    from is a failed connection (requests/urllib3, or a database driver's OperationalError); else None."""
    seen = _chain(exc)
    names = {c.__name__ for e in seen for c in type(e).__mro__}
    text = " ".join(str(e) for e in seen)
    within = f" within {timeout:g} s" if timeout else ""
    for found, says in (("ConnectTimeout" in names or "ConnectTimeoutError" in text, f"no connection{within}"),
                        ("ReadTimeout" in names or "Read timed out" in text, f"connected, but no answer{within}"),
                        ("SSLError" in names, "TLS error"),
                        ("Connection refused" in text, "connection refused"),
                        (any(s in text for s in ("NameResolutionError", "Name or service not known", "nodename nor",
                                                 "Temporary failure in name resolution")), "host name not found"),
                        ("No route to host" in text, "no route to host"),
                        ("Network is unreachable" in text, "network unreachable"),
                        (any(s in text for s in ("Connection reset", "Connection aborted", "RemoteDisconnected")),
                         "connection dropped"),
                        ("ConnectionError" in names or "MaxRetryError" in names, "cannot connect")):
        if found:
            return says
    db = next((e for e in seen if "OperationalError" in {c.__name__ for c in type(e).__mro__}), None)
    if db is not None:  # sqlalchemy's wraps the driver's (.orig): its first line says why
        return (str(getattr(db, "orig", None) or db).strip().splitlines() or ["cannot connect"])[0][:200]
    return None


def store_down(exc: BaseException) -> str | None:
    """The one line for an MLflow call that failed because its tracking server or database stopped answering (after
    MLflow's retries, stages.cli.MLFLOW_HTTP_DEFAULTS), or None for any other error."""
    uri = os.environ.get(credentials.URI_ENV, "")
    from_store = any(type(e).__module__.split(".")[0] in ("mlflow", "sqlalchemy") for e in _chain(exc))
    if not uri or uri.startswith(("sqlite:", "file:")) or "://" not in uri or not from_store:
        return None
    reason = connection_problem(exc)
    return reason and (f"MLflow tracking store {credentials.strip_userinfo(uri)} stopped answering ({reason}); "
                       "start it and re-run the stage")


def _fail(shown: str, what: str, since: float, hint: str) -> PipelineError:
    return PipelineError(f"MLflow tracking {shown} is not answering ({what} after {time.monotonic() - since:.1f} s); "
                         f"{hint}")


def _check_http(uri: str, timeout: float) -> None:
    import requests
    from mlflow.utils.credentials import get_default_host_creds

    creds = get_default_host_creds(uri)  # MLflow's own: MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN, TLS settings
    auth = (creds.username, creds.password) if creds.username and creds.password else None
    headers = {"Authorization": f"Bearer {creds.token}"} if auth is None and creds.token else {}
    shown, t0 = f"server {credentials.strip_userinfo(uri)}", time.monotonic()
    for path, query in ((HEALTH, None), (SEARCH, {"max_results": 1})):
        try:
            r = requests.get(uri.rstrip("/") + path, params=query, auth=auth, headers=headers, timeout=timeout,
                             verify=creds.verify, cert=creds.client_cert_path)
        except requests.RequestException as e:
            what = connection_problem(e, timeout) or type(e).__name__
            hint = ("set MLFLOW_TRACKING_SERVER_CERT_PATH to its CA bundle (or MLFLOW_TRACKING_INSECURE_TLS=true)"
                    if what == "TLS error" else "start it or unset MLFLOW_TRACKING_URI to use ./mlflow.db")
            raise _fail(shown, what, t0, hint) from None
        if r.status_code == 200:
            return
        if r.status_code == 404 and path == HEALTH:
            continue
        if r.status_code in (401, 403):
            raise PipelineError(f"MLflow tracking {shown} refuses the credentials (HTTP {r.status_code} at {path}): set "
                                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)")
        why = "a server error: see the server's log" if r.status_code >= 500 else (
            "is MLFLOW_TRACKING_URI an MLflow server's address, with its path prefix if it has one?")
        raise PipelineError(f"MLflow tracking {shown} answers HTTP {r.status_code} at {path} ({why})")


def _check_database(uri: str, timeout: float) -> None:
    """A connect with a short timeout; a missing driver is left to MLflow's own error (it names the package)."""
    try:
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        url = sqlalchemy.engine.make_url(uri)
        arg = DATABASES.get(url.get_backend_name(), {}).get(url.get_dialect().driver)
        engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args={arg: int(timeout)} if arg else {})
    except ImportError:
        return
    t0 = time.monotonic()
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.DBAPIError as e:
        what = connection_problem(e, timeout)  # for a driver's error: its first line
        raise _fail(f"database {credentials.strip_userinfo(uri)}", what or type(e).__name__, t0,
                    "start it or unset MLFLOW_TRACKING_URI to use ./mlflow.db") from None
    finally:
        engine.dispose()


def check_server(uri: str, timeout: float = TIMEOUT_S) -> None:
    """One quick request to the tracking store at `uri`: GET /health on an MLflow server (or an API search where a
    proxy hides /health), a connect to a PostgreSQL/MySQL/MSSQL database; nothing for SQLite or files. A store that
    is not there is a PipelineError naming the URI (without credentials) and what to do."""
    scheme = urlsplit(uri).scheme.lower()
    if scheme in ("http", "https"):
        _check_http(uri, timeout)
    elif scheme.split("+")[0] in DATABASES or scheme == "postgres":
        _check_database(uri.replace("postgres://", "postgresql://", 1), timeout)


def stage_tags(stage: str, inputs_key: str) -> dict[str, str]:
    """Tags a training stage's run carries from its start, so a later start of the same stage on the same inputs can
    tell whether it was left RUNNING by a process that is gone."""
    return {STAGE: stage, INPUTS: inputs_key, HOST: socket.gethostname(), PID: str(os.getpid())}


def _gone(pid: int, started_ms: int) -> bool:
    """Whether process `pid` of this machine, which started a run at `started_ms`, has ended: no such process, a
    zombie, or a process of that pid started after the run did (the pid was reused)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return proc.status() == psutil.STATUS_ZOMBIE or proc.create_time() * 1000 > started_ms + 1000
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:  # someone else's live process
        return False


def close_dangling(client, run_id: str, now_ms: int | None = None) -> list[str]:
    """Close the runs of run `run_id`'s stage and inputs (its stage_tags) that are RUNNING though their process is gone:
    status KILLED, tagged with which run found them; `run_id` is tagged with the ids it replaces. A run of another
    machine is closed only when it started over FOREIGN_AGE_S ago. Returns the closed ids, oldest first."""
    run = client.get_run(run_id)
    tags, host = run.data.tags, socket.gethostname()
    if not tags.get(STAGE) or not tags.get(INPUTS):
        return []
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    found = client.search_runs([run.info.experiment_id], max_results=1000, order_by=["attributes.start_time ASC"],
                               filter_string=f"attributes.status = 'RUNNING' and tags.`{STAGE}` = '{tags[STAGE]}' "
                                             f"and tags.`{INPUTS}` = '{tags[INPUTS]}'")
    closed = []
    for old in found:
        info, other = old.info, old.data.tags
        pid = int(other[PID]) if other.get(PID, "").isdigit() else None
        if info.run_id == run_id or pid is None:
            continue
        age_d = (now_ms - info.start_time) / 86_400_000
        if other.get(HOST) == host:
            if not _gone(pid, info.start_time):
                continue  # a live run of the same inputs beside this one: not ours to close
            why = f"its process (pid {pid} on {host}) is gone, killed"
            line = f"closed MLflow run {info.run_id} left RUNNING by a killed {tags[STAGE]} (pid {pid})"
        elif age_d * 86_400 > FOREIGN_AGE_S:
            why = f"RUNNING for {age_d:.1f} days on host {other.get(HOST)} (pid {pid}), assumed killed"
            line = f"closed MLflow run {info.run_id} left RUNNING by {tags[STAGE]} on {other.get(HOST)} {age_d:.1f} days ago"
        else:
            log.info("MLflow run %s of %s on the same inputs is RUNNING on host %s (pid %s): left as it is",
                     info.run_id, tags[STAGE], other.get(HOST), pid)
            continue
        client.set_tag(info.run_id, "pipeline.closed_by_run", run_id)
        client.set_tag(info.run_id, "pipeline.closed_because", f"{why}; closed KILLED by run {run_id}")
        client.set_terminated(info.run_id, "KILLED")
        log.info(line)
        closed.append(info.run_id)
    if closed:
        client.set_tag(run_id, "pipeline.replaces_run", ",".join(closed))
    return closed
