"""flows.retrain's drift report: stages.drift's measures taken with the champion's tokenizer and encoder, and the
report published as a Prefect markdown artifact and an MLflow artifact."""

from __future__ import annotations

from pathlib import Path

from stages import drift


def encoder_folder(params, scratch: Path) -> tuple[str, str]:
    """(folder, what it is): the champion's fine-tuned folder if there is one, else the pretrained model."""
    from stages import registry
    from stages.loading import resolve_model

    mv = registry.alias_version(params.register.model_name, params.register.champion_alias)
    if mv is not None:
        return str(registry.model_folder(mv, scratch / "champion")), f"champion, version {mv.version}"
    return resolve_model(params.model.name), f"{params.model.name} (no champion yet)"


def measure(task, params, train, new, scratch: Path) -> dict:
    """stages.drift's four measures: the new units against the train split."""
    import torch

    from stages.baselines import mean_pooled
    from stages.loading import load_encoder, load_tokenizer
    from stages.modeling import pick_device

    d = params.retrain.drift
    (train_texts, train_labels), (new_texts, new_labels) = task.drift_view(train), task.drift_view(new)
    report = {"train_rows": len(train_texts), "new_rows": len(new_texts),
              "labels": drift.label_drift(train_labels, new_labels),
              "length": drift.length_drift(train_texts, new_texts)}
    a, b = drift.sample(train_texts, d.sample, d.seed), drift.sample(new_texts, d.sample, d.seed + 1)
    folder, what = encoder_folder(params, scratch)
    tokenizer = load_tokenizer(folder)
    ids = [tokenizer(list(t), truncation=True, max_length=params.tokenize.max_length)["input_ids"] for t in (a, b)]
    report["unk"] = drift.unk_drift(*([s[1:-1] for s in seqs] for seqs in ids), tokenizer.unk_token_id)  # no CLS/SEP
    device = pick_device("auto")
    with torch.inference_mode():
        encoder = load_encoder(folder).to(device)
        vectors = [mean_pooled(encoder, seqs, d.batch_size, tokenizer.pad_token_id, device) for seqs in ids]
    report["embeddings"] = drift.domain_auc(*vectors, seed=d.seed)
    return report | {"sampled_train": len(a), "sampled_new": len(b), "encoder": what}


def publish(log, report: dict, run_id: str | None, params) -> None:
    """The report as a Prefect markdown artifact and an MLflow artifact (of `run_id`, else of a small run)."""
    from prefect.artifacts import create_markdown_artifact

    from stages import tracking

    markdown = drift.markdown(report, report["decision"], report["reasons"])
    create_markdown_artifact(markdown=markdown, key="drift-report", description="retrain: new data vs train split")
    # The client, never the fluent API: a flow runs in a long-lived process (a worker, `serve`, a test session) that
    # must not keep this experiment as its active one.
    client, own_run = tracking.client(), not run_id
    if own_run:
        experiment = client.get_experiment_by_name(params.tracking.experiment)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(params.tracking.experiment)
        tags = {"drift.decision": report["decision"]}
        run_id = client.create_run(experiment_id, run_name="retrain-" + report["decision"], tags=tags).info.run_id
    client.log_text(run_id, markdown, "drift/report.md")
    client.log_dict(run_id, report, "drift/report.json")
    client.set_tag(run_id, "drift.decision", report["decision"])
    if own_run:
        client.set_terminated(run_id)
        log.info("drift report logged to MLflow experiment %s", params.tracking.experiment)
