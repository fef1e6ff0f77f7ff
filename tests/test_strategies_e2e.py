"""A LoRA run with balanced class weights through `dvc repro`: the registered model is a plain merged HF folder that
serves like any other, the unmerged adapter is its own small artifact, the run records what trained."""

import json

import pytest

from tests.conftest import make_project, run_in, store_client, write_reviews
from tests.test_e2e import tiny_params

pytestmark = pytest.mark.e2e


def test_lora_with_class_weights_registers_a_merged_model(tmp_path, tiny_model_dir):
    params = tiny_params(tiny_model_dir)
    params["finetune"] = params["finetune"] | {"strategy": "lora", "class_weights": "balanced", "learning_rate": 1e-2,
                                               "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["query", "value"]}}
    root = make_project(tmp_path, params | {"augment": {"enabled": False}})
    write_reviews(root / "data/source/reviews.csv", 200)
    run_in(root, "dvc", "repro")
    assert run_in(root, "dvc", "status").stdout.strip() == "Data and pipelines are up to date."

    adapter = json.loads((root / "models/adapter/strategy.json").read_text())
    assert adapter["strategy"] == "lora" and 0 < adapter["trainable_params"] < adapter["total_params"] / 10
    assert (root / "models/adapter/adapter_model.safetensors").exists() and adapter["adapter_bytes"] > 0
    from safetensors import safe_open

    with safe_open(str(root / "models/finetuned/model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert not [k for k in keys if "lora" in k or "base_layer" in k or "modules_to_save" in k]  # merged, plain

    train = json.loads((root / "reports/train.json").read_text())
    assert train["strategy"] == "lora" and train["peak_memory_mb"] > 0
    assert adapter["adapter_bytes"] < train["model_bytes"] / 5
    client = store_client(root)
    run = client.get_run(json.loads((root / "reports/mlflow_run.json").read_text())["run_id"])
    assert run.data.params["finetune.strategy"] == "lora" and run.data.params["finetune.class_weights"] == "balanced"
    assert run.data.params["strategy.trainable_params"] == str(adapter["trainable_params"])
    assert run.data.params["strategy.adapter_bytes"] == str(adapter["adapter_bytes"]) and run.data.metrics["peak_memory_mb"] > 0
    assert "adapter/adapter_model.safetensors" in [a.path for a in client.list_artifacts(run.info.run_id, "adapter")]

    code = ("import mlflow; mlflow.set_tracking_uri('sqlite:///mlflow.db');"
            "m = mlflow.pyfunc.load_model('models:/toy@champion');"
            "print(m.predict(['a wonderful superb film', 'an awful boring film']).label.tolist())")
    out = run_in(root, "python", "-c", code).stdout.strip().splitlines()[-1]
    assert out.startswith("[") and len(eval(out)) == 2  # noqa: S307 (our own print)
