"""Prefect flows that run the DVC stages (dvc.yaml is the one definition of the DAG)."""
