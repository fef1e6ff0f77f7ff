"""Credentials live in the environment only: never in a file the project writes, never in a log line.

`MLFLOW_TRACKING_URI=http://user:password@host:5000` works, but the entry points (stages.cli, flows) move the
userinfo into `MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD` (which MLflow's HTTP client sends as basic
auth) and leave the URI without it, so MLflow's own lines ("View run at ...") and ours carry no secret. `redact`
is the second line of defence for any text that might still hold a URI with userinfo.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import MutableMapping
from urllib.parse import unquote, urlsplit, urlunsplit

URI_ENV, USER_ENV, PASSWORD_ENV = "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@:]*(?::[^/\s@]*)?@")


def strip_userinfo(uri: str) -> str:
    """The URI without `user:password@` (other URIs unchanged)."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return urlunsplit(parts._replace(netloc=host + (f":{parts.port}" if parts.port else "")))


def redact(text: str) -> str:
    """Any `scheme://user:password@` in `text` becomes `scheme://***@`."""
    return _USERINFO.sub(r"\g<scheme>***@", text)


def move_to_env(environ: MutableMapping[str, str] = os.environ) -> None:
    """Userinfo in an http(s) $MLFLOW_TRACKING_URI → $MLFLOW_TRACKING_USERNAME/PASSWORD (values already set win), and
    the URI without it. Child processes (DVC's stages, the flow's) inherit the clean pair."""
    uri = environ.get(URI_ENV, "")
    parts = urlsplit(uri)
    if not uri or (parts.username is None and parts.password is None):
        return
    if parts.scheme not in ("http", "https"):
        # a database URI (postgresql://user:pw@host/db, used without `mlflow server`): SQLAlchemy reads the password
        # from the URI only, so it stays there; what is written or logged goes through strip_userinfo / redact
        return
    if parts.username:
        environ.setdefault(USER_ENV, unquote(parts.username))
    if parts.password is not None:
        environ.setdefault(PASSWORD_ENV, unquote(parts.password))
    environ[URI_ENV] = strip_userinfo(uri)


class RedactFilter(logging.Filter):
    """A handler filter: the message of every record that passes the handler is redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def redact_logging() -> None:
    """Put RedactFilter on the root logger's handlers (where stage and library records end up)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactFilter) for f in handler.filters):
            handler.addFilter(RedactFilter())
