"""An S3 outage longer than the store's retry budget, mid-stage: Prefect's retry resumes the stage.

The artifact store is moto's S3 server on 127.0.0.1, and the stage runs as in
production: the Prefect task `run-stage` starts `accelerate launch`, which
starts the training process. Once a checkpoint inside the second epoch is in
the bucket, the server is stopped. The training process keeps training until
its next publish, waits out pit's small budget (`storage.max_attempts=2`),
and fails with a transient StorageUnavailableError; only then does the server
come back (with its data, as a restarted MinIO does). Prefect's retry must
resume from the newest complete checkpoint and end with the weights and
metrics of a stage that never saw an outage, each epoch logged once.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from prefect import flow
from s3server import SECRET_MARKER, S3Server
from safetensors.torch import load_file
from test_resume import _training_processes as training_processes
from test_resume import one_stage

from pit import pipeline
from pit.artifacts import published_folder, store_for
from pit.config_sources import load_config
from pit.keys import stage_output
from pit.recipe import select_recipes
from pit.tracking import Tracker
from pit.train.checkpoint import list_checkpoints, step_of

pytestmark = [pytest.mark.slow, pytest.mark.integration]

STAGE = [
    "train.test_doc_epochs=3", "train.doc_batch_size=1", "train.qa_batch_size=2",
    "checkpoint.every_steps=3", "checkpoint.keep_last=2", "train.launcher=process",
    "storage.max_attempts=2", "storage.backoff_s=0.05",
]


@pytest.fixture(scope="module")
def server():
    s3 = S3Server().start()
    mp = pytest.MonkeyPatch()
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        mp.delenv(var, raising=False)
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": SECRET_MARKER,
                 "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
                 "AWS_ENDPOINT_URL": s3.endpoint_url}.items():
        mp.setenv(k, v)
    yield s3
    mp.undo()
    s3.stop()


@pytest.fixture(scope="module")
def prepared(server, tmp_path_factory, tiny_overrides):
    work = tmp_path_factory.mktemp("outage")
    mp = pytest.MonkeyPatch()
    mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(work / "no-credentials"))
    mp.setenv("AWS_CONFIG_FILE", str(work / "no-config"))
    bucket = server.create_bucket()
    cfg = load_config("smoke", None, [
        *tiny_overrides, *STAGE, f"workdir={work}", f"storage.root=s3://{bucket}/pit",
        f"storage.endpoint_url={server.endpoint_url}",
        f"tracking.tracking_uri=sqlite:///{work / 'mlflow.db'}", "tracking.experiment=outage"])
    data = pipeline.build_dataset(cfg)
    base = pipeline.build_base(cfg, data)
    yield cfg, data, base
    mp.undo()


def complete_steps(store, prefix: str) -> list[int]:
    return [step_of(k) or 0 for k in list_checkpoints(store, prefix) if store.is_complete(k)]


class Outage(threading.Thread):
    """Stops the server after a checkpoint inside the second epoch; restarts it once the
    training process has given up on it."""

    def __init__(self, server: S3Server, store, prefix: str) -> None:
        super().__init__(daemon=True)
        self.server, self.store, self.prefix = server, store, prefix
        self.stopped_after: dict | None = None
        self.resume_step: int | None = None
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set() and self.stopped_after is None:
            for key in list_checkpoints(self.store, self.prefix):
                m = self.store.read_manifest(key)
                if m and m["epoch"] >= 1 and m["batch"] > 0:
                    self.stopped_after = m
                    self.server.stop()
                    break
            time.sleep(0.02)
        while not self.done.is_set() and training_processes():
            time.sleep(0.05)
        self.server.start()
        self.resume_step = max(complete_steps(self.store, self.prefix), default=0)


@flow(name="one-stage-on-s3")
def test_an_s3_outage_mid_stage_is_waited_out_by_the_task_retry_with_identical_results(
        server, prepared, prefect_harness, capfd):
    cfg, data, base = prepared
    recipe = select_recipes(["cpt"])[0]
    store = store_for(cfg)
    tracker = Tracker(cfg.tracking.tracking_uri, cfg.tracking.experiment)

    ref_run = tracker.start_run("reference")
    inline = cfg.model_copy(update={"train": cfg.train.model_copy(update={"launcher": "inline"})})
    ref_key, ref_metrics = pipeline.run_stage(inline, recipe, 0, base, data, ref_run, 0)
    reference = load_file(published_folder(cfg, ref_key) / "model.safetensors")
    fp = pipeline.load_dataset(cfg, data).fingerprint
    prefix = stage_output(cfg, recipe.stages[0], 0, base, fp, 0).checkpoints
    store.rm(ref_key)
    store.rm(prefix)

    run_id = tracker.start_run("outage-and-retry")
    outage = Outage(server, store, prefix)
    outage.start()
    try:
        state = one_stage(cfg, recipe, base, data, run_id)
    finally:
        outage.done.set()
        outage.join(60)
        if not server.running:
            server.start()
    err = capfd.readouterr().err
    assert outage.stopped_after is not None, "the stage finished before the outage"
    assert "Is the S3 endpoint up?" in err, "the first try failed on the outage"
    resumed = [int(n) for n in re.findall(r"resumes after step (\d+)", err)]
    assert resumed == [outage.resume_step], (resumed, outage.resume_step)
    assert outage.resume_step >= outage.stopped_after["step"] > 0

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        task_run = client.read_task_run(state.state_details.task_run_id)
    assert state.is_completed() and task_run.run_count == 2

    key, metrics = state.result()
    assert key == ref_key
    assert metrics == ref_metrics
    final = load_file(Path(published_folder(cfg, key)) / "model.safetensors")
    assert final.keys() == reference.keys()
    assert all(torch.equal(final[k], reference[k]) for k in final)
    assert store.verify(key, hashes=True)

    client = MlflowClient(cfg.tracking.tracking_uri)
    n_epochs = recipe.stages[0].resolved_epochs(cfg.train)
    for name in ("loss_doc", "exact_match", "test_doc_ppl"):
        history = sorted(client.get_metric_history(run_id, name), key=lambda m: m.step)
        assert [m.step for m in history] == list(range(1, n_epochs + 1)), name
        ref = sorted(client.get_metric_history(ref_run, name), key=lambda m: m.step)
        assert [m.value for m in history] == [m.value for m in ref], name
