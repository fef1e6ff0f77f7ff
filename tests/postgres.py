"""A throwaway PostgreSQL server on 127.0.0.1 (Debian's `postgresql` package: initdb/pg_ctl), for the team setup's
test: MLflow's backend store on a real database server. As root, PostgreSQL runs as the `postgres` user (it refuses
root), in a data folder that user owns."""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[4]))
    return versions[-1] if versions else None


def why_not() -> str | None:
    """Why a server cannot be started here, or None."""
    if not (pg_bin("initdb") and pg_bin("pg_ctl")):
        return "PostgreSQL is not installed (Debian: apt-get install postgresql; .ci/run does it)"
    if os.geteuid() == 0 and not shutil.which("runuser"):
        return "running as root without runuser: PostgreSQL refuses to run as root"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed (pip install -e '.[test]')"
    return None


@contextmanager
def postgres(port: int, user: str = "mlflow", database: str = "mlflow") -> Iterator[str]:
    """Start a server on 127.0.0.1:`port` with one password-protected role and database; yields its SQLAlchemy URI
    (postgresql://user:password@127.0.0.1:port/database). Everything is removed afterwards."""
    home = Path(tempfile.mkdtemp(prefix="pg-"))  # not under pytest's 0700 tmp folders: the postgres user must enter
    password = secrets.token_hex(12)
    as_owner: list[str] = []
    if os.geteuid() == 0:
        as_owner = ["runuser", "-u", "postgres", "--"]
        shutil.chown(home, "postgres", "postgres")
    (home / "pw").write_text(password)
    if as_owner:
        shutil.chown(home / "pw", "postgres", "postgres")
    data, log = home / "data", home / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | {"LC_ALL": "C"}

    def run(*args: str) -> None:
        proc = subprocess.run([*as_owner, *args], env=env, capture_output=True, text=True, timeout=120)
        if proc.returncode:
            tail = log.read_text()[-1500:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed: {proc.stdout[-1500:]}{proc.stderr[-1500:]}{tail}")

    try:
        run(pg_bin("initdb"), "-D", str(data), "-U", user, f"--pwfile={home / 'pw'}", "--auth=scram-sha-256",
            "-E", "UTF8")
        run(pg_bin("pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
            f"-p {port} -k {home} -c listen_addresses=127.0.0.1", "start")
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user=user, password=password, dbname="postgres")
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        conn.cursor().execute(f"CREATE DATABASE {database}")
        conn.close()
        yield f"postgresql://{user}:{password}@127.0.0.1:{port}/{database}"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*as_owner, pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], env=env,
                           capture_output=True, timeout=120)
        shutil.rmtree(home, ignore_errors=True)
