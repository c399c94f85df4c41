"""Shared fixtures: real services on 127.0.0.1 (moto S3, MLflow server, Prefect harness)."""

from __future__ import annotations

import os

import pytest

# Prefect sets up its log handlers on the streams of the moment it first loads. Loading it
# here binds them to the real streams, not to those of a CliRunner, which closes them on return.
from prefect import flow  # noqa: F401

pytest_plugins = ["s3server", "services"]

os.environ.setdefault("PIT_PROGRESS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture(scope="session")
def tiny_overrides() -> list[str]:
    """The smoke preset shrunk further: a whole recipe in a second or two."""
    return [
        "world.n_old=6", "world.n_train=6", "world.n_test=4", "world.n_cross=4",
        "data.retention_questions=6", "base.epochs=2", "train.test_doc_epochs=2",
    ]
