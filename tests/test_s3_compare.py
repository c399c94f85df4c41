"""A smoke comparison with everything in S3: moto's server behind pit's store and MLflow's.

One moto S3 endpoint on 127.0.0.1 holds two things in one bucket: pit's
artifact store (`--artifact-root s3://bucket/pit`: data set, base model,
checkpoints, stage models) and the artifacts of a real `mlflow server`
(`--artifacts-destination s3://bucket/mlartifacts`). The comparison runs
through the CLI, its training stage in its own accelerate process; then the
bucket is read back with boto3 and every URI MLflow records must name an
output there that is complete (has its manifest).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from s3server import SECRET_MARKER
from services import MlflowServer
from typer.testing import CliRunner

from pit.cli import app

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def aws_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": SECRET_MARKER,
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint,
        "MLFLOW_S3_ENDPOINT_URL": endpoint, "AWS_EC2_METADATA_DISABLED": "true",
    }


@pytest.fixture(scope="module")
def s3_run(tmp_path_factory, s3_server, prefect_harness, tiny_overrides):
    work = tmp_path_factory.mktemp("s3-compare")
    bucket = s3_server.create_bucket()
    env = aws_env(s3_server.endpoint_url)
    server = MlflowServer(work / "mlflow", artifacts_destination=f"s3://{bucket}/mlartifacts",
                          env=env)
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        mp.setenv(k, v)
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        mp.delenv(var, raising=False)
    mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(work / "no-credentials"))
    mp.setenv("AWS_CONFIG_FILE", str(work / "no-config"))
    mp.setenv("MLFLOW_TRACKING_URI", server.url)
    results = work / "r.json"
    try:
        args = ["compare", "--preset", "smoke", "--methods", "closed-book,cpt",
                "--artifact-root", f"s3://{bucket}/pit", "--results", str(results),
                "--set", f"workdir={work}", "--set", "tracking.experiment=s3-compare",
                "--set", "train.launcher=process"]
        for o in tiny_overrides:
            args += ["--set", o]
        out = CliRunner().invoke(app, args)
        assert out.exit_code == 0, out.output + repr(out.exception)
        keys = [o["Key"] for page in s3_server.client().get_paginator("list_objects_v2")
                .paginate(Bucket=bucket) for o in page.get("Contents", [])]
        yield {"doc": json.loads(results.read_text()), "bucket": bucket, "keys": keys,
               "client": MlflowClient(server.url)}
    finally:
        mp.undo()
        server.stop()


def complete(run: dict, url: str) -> bool:
    """Whether an s3:// URL names a published output (its manifest is in the bucket)."""
    prefix = f"s3://{run['bucket']}/"
    assert url.startswith(prefix), url
    return f"{url[len(prefix):].rstrip('/')}/MANIFEST.json" in run["keys"]


def test_dataset_base_model_checkpoints_and_stage_models_are_published_in_the_bucket(s3_run):
    manifests = [k for k in s3_run["keys"] if k.endswith("/MANIFEST.json")]
    kinds = {k.split("/")[1] for k in manifests if k.startswith("pit/")}
    assert {"datasets", "models", "stages", "checkpoints"} <= kinds
    assert any(k.startswith("pit/checkpoints/s0-test_docs+train_qa-") and "/step-" in k
               for k in manifests)
    assert any(k.startswith("pit/stages/s0-test_docs+train_qa-") for k in manifests)
    assert any(k.endswith("/model.safetensors") and "/checkpoints/" in k for k in s3_run["keys"])
    assert not [k for k in s3_run["keys"] if k.endswith((".bin", ".pt", ".pkl"))]


def test_mlflow_runs_point_at_outputs_in_the_bucket(s3_run):
    client, doc = s3_run["client"], s3_run["doc"]
    run = client.get_run(doc["methods"]["cpt"]["mlflow_run_id"])
    tags, params = run.data.tags, run.data.params
    assert tags["final_model"] == tags["pit.stage0.model"]
    assert complete(s3_run, tags["final_model"])
    assert complete(s3_run, tags["pit.stage0.last_checkpoint"])
    assert tags["pit.stage0.last_checkpoint"].startswith(tags["pit.stage0.checkpoints"] + "/")
    assert f"pit/{params['dataset']}/MANIFEST.json" in s3_run["keys"]
    assert f"pit/{params['base_model']}/MANIFEST.json" in s3_run["keys"]

    path = client.download_artifacts(run.info.run_id, "stages/stage-0.json")
    listed = json.loads(Path(path).read_text())
    assert listed["model"] == tags["final_model"]
    assert listed["checkpoints"] and all(complete(s3_run, c) for c in listed["checkpoints"])


def test_mlflow_artifacts_live_in_the_same_bucket(s3_run):
    client, doc = s3_run["client"], s3_run["doc"]
    for run_id in (doc["mlflow_parent_run_id"], doc["methods"]["cpt"]["mlflow_run_id"]):
        exp = client.get_run(run_id).info.experiment_id
        stored = [k for k in s3_run["keys"] if k.startswith(f"mlartifacts/{exp}/")
                  and f"/{run_id}/" in k]
        names = {os.path.basename(k) for k in stored}
        assert names, run_id
    cpt_run = doc["methods"]["cpt"]["mlflow_run_id"]
    assert any(k.endswith(f"{cpt_run}/artifacts/stages/stage-0.json") for k in s3_run["keys"])
    assert any(k.endswith("/artifacts/comparison.json") for k in s3_run["keys"])
