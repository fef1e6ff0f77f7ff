"""The team setup: MLflow's store on a real PostgreSQL server behind `mlflow server`, artifacts in the server's
artifact store. The pipeline runs against it through `dvc repro`, registers, and another process loads the champion."""

import json
import subprocess
import sys

import pytest

from tests.conftest import free_port, make_project, mlflow_server_on, project_env, write_reviews
from tests.postgres import postgres, why_not
from tests.test_e2e import tiny_params

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def mlflow_on_postgres(tmp_path_factory):
    """(tracking URI of an `mlflow server` on PostgreSQL, the database's SQLAlchemy URI, the artifact folder)."""
    if reason := why_not():
        pytest.skip(reason)
    home = tmp_path_factory.mktemp("mlflow-pg")
    with postgres(free_port()) as db_uri, mlflow_server_on(home, db_uri, project_env()) as uri:
        yield uri, db_uri, home / "artifacts"


def test_pipeline_registers_into_mlflow_on_postgresql(tmp_path, tiny_model_dir, mlflow_on_postgres):
    import sqlalchemy as sa

    uri, db_uri, artifacts = mlflow_on_postgres
    root = make_project(tmp_path / "p", tiny_params(tiny_model_dir) | {"augment": {"enabled": False},
                                                                        "register": {"model_name": "toy-pg"}})
    write_reviews(root / "data/source/reviews.csv", 200)
    env = project_env() | {"MLFLOW_TRACKING_URI": uri}
    proc = subprocess.run(["dvc", "repro"], cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((root / "reports/register.json").read_text())
    assert report["promoted"] and report["version"] == "1"
    assert not (root / "mlflow.db").exists() and not (root / "mlartifacts").exists()  # nothing fell back to local

    # the runs, their metrics and the registry are rows in PostgreSQL; the model files are in the artifact store
    with sa.create_engine(db_uri).connect() as db:
        run_id = json.loads((root / "reports/mlflow_run.json").read_text())["run_id"]
        assert db.execute(sa.text("select status from runs where run_uuid = :r"), {"r": run_id}).scalar() == "FINISHED"
        assert db.execute(sa.text("select count(*) from metrics where run_uuid = :r"), {"r": run_id}).scalar() > 5
        assert db.execute(sa.text("select version from registered_model_aliases where name = 'toy-pg' and "
                                  "alias = 'champion'")).scalar() == 1
    assert any(f.name == "model.safetensors" for f in artifacts.rglob("*"))

    # another process, elsewhere, serves the champion through the server alone
    code = ("import mlflow, pandas as pd; m = mlflow.pyfunc.load_model('models:/toy-pg@champion'); "
            "print(list(m.predict(pd.DataFrame({'text': ['great brilliant film', 'awful dull plot']}))['label']))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    labels = eval(out.stdout.strip().splitlines()[-1])  # noqa: S307 - our own print of a list of str
    assert len(labels) == 2 and set(labels) <= {"positive", "negative"}
