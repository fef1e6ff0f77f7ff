"""Credentials in the tracking URI move to the environment; nothing we write or log carries them."""

import logging

import pytest

from stages import credentials


@pytest.mark.parametrize("uri, clean", [
    ("http://user:s3cret@host:5000", "http://host:5000"),
    ("https://user:p%40ss@mlflow.example.com/path", "https://mlflow.example.com/path"),
    ("http://token@host", "http://host"),
    ("http://host:5000", "http://host:5000"),
    ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
    ("postgresql://u:pw@[::1]:5432/db", "postgresql://[::1]:5432/db"),
])
def test_strip_userinfo(uri, clean):
    assert credentials.strip_userinfo(uri) == clean


def test_move_to_env_keeps_values_already_set():
    env = {"MLFLOW_TRACKING_URI": "http://alice:p%40ss@host:5000"}
    credentials.move_to_env(env)
    assert env == {"MLFLOW_TRACKING_URI": "http://host:5000", "MLFLOW_TRACKING_USERNAME": "alice",
                   "MLFLOW_TRACKING_PASSWORD": "p@ss"}
    env = {"MLFLOW_TRACKING_URI": "http://bob:x@host", "MLFLOW_TRACKING_PASSWORD": "from-env"}
    credentials.move_to_env(env)
    assert env["MLFLOW_TRACKING_PASSWORD"] == "from-env" and env["MLFLOW_TRACKING_URI"] == "http://host"



def test_a_database_uri_keeps_its_password():
    """SQLAlchemy reads a database's password from the URI only: moving it to MLFLOW_TRACKING_PASSWORD would lose it."""
    env = {"MLFLOW_TRACKING_URI": "postgresql://mlflow:pw@db:5432/mlflow"}
    credentials.move_to_env(env)
    assert env == {"MLFLOW_TRACKING_URI": "postgresql://mlflow:pw@db:5432/mlflow"}

def test_redact_and_the_log_filter(caplog):
    line = "View run at: http://u:s3cret@10.0.0.1:5000/#/experiments/1 and postgresql://a:b@db/x"
    assert credentials.redact(line) == "View run at: http://***@10.0.0.1:5000/#/experiments/1 and postgresql://***@db/x"
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "uri %s", ("http://u:s3cret@h",), None)
    credentials.RedactFilter().filter(record)
    assert record.getMessage() == "uri http://***@h"
