"""A training process killed with SIGKILL mid-stage; the Prefect retry resumes it exactly.

The stage runs as it does in production: the Prefect task `run-stage` starts
`accelerate launch`, which starts the training process. A watcher thread
waits for the first checkpoint taken inside the second epoch (so one epoch's
metrics are already in MLflow and the resume lands mid-epoch), then kills
the training process with SIGKILL. The task fails, Prefect retries it, the
retry resumes from the newest complete checkpoint, and the stage must end
with the very weights and metrics of a stage that was never interrupted, in
the same MLflow run, with every epoch logged once.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch
from mlflow.tracking import MlflowClient
from prefect import flow
from safetensors.torch import load_file

from pit import pipeline
from pit.artifacts import store_for
from pit.config_sources import load_config
from pit.keys import stage_output
from pit.recipe import select_recipes
from pit.tracking import Tracker
from pit.train.checkpoint import latest_checkpoint, list_checkpoints
from tasks import training as t

pytestmark = [pytest.mark.slow, pytest.mark.integration]

STAGE = [
    "train.test_doc_epochs=3", "train.doc_batch_size=1", "train.qa_batch_size=2",
    "checkpoint.every_steps=3", "checkpoint.keep_last=2", "train.launcher=process",
]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_overrides):
    work = tmp_path_factory.mktemp("resume")
    cfg = load_config("smoke", None, [*tiny_overrides, *STAGE, f"workdir={work}",
                                      f"tracking.tracking_uri=sqlite:///{work / 'mlflow.db'}",
                                      "tracking.experiment=resume"])
    data = pipeline.build_dataset(cfg)
    base = pipeline.build_base(cfg, data)
    return cfg, data, base


def _training_processes() -> list[psutil.Process]:
    """The processes that train: children of accelerate launch, not the launcher itself."""
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            cmd = p.cmdline()
        except psutil.NoSuchProcess:
            continue
        if "pit.train.launch" in cmd and "accelerate.commands.launch" not in cmd:
            found.append(p)
    return found


class Killer(threading.Thread):
    """Kills the training process once a checkpoint inside the second epoch is published.

    The process may publish another checkpoint between the look and the kill,
    so the step a resume must start from is read once the process is gone:
    the newest complete checkpoint then (`resume_step`).
    """

    def __init__(self, store, prefix: str) -> None:
        super().__init__(daemon=True)
        self.store, self.prefix = store, prefix
        self.killed_after: dict | None = None
        self.resume_step: int | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for key in list_checkpoints(self.store, self.prefix):
                m = self.store.read_manifest(key)
                if m and m["epoch"] >= 1 and m["batch"] > 0:
                    killed = _training_processes()
                    for p in killed:
                        p.send_signal(signal.SIGKILL)
                        self.killed_after = {"key": key, "pid": p.pid, **m}
                    if self.killed_after:
                        psutil.wait_procs(killed, timeout=30)
                        self.resume_step = latest_checkpoint(self.store, self.prefix).step
                        return
            time.sleep(0.02)


@flow(name="one-stage")
def one_stage(cfg, recipe, model_ref: str, data_key: str, run_id: str):
    return t.run_stage(cfg, recipe, 0, model_ref, data_key, run_id, 0, return_state=True)


def test_killed_stage_resumes_on_retry_with_identical_weights_metrics_and_run(
        prepared, prefect_harness, capfd):
    cfg, data, base = prepared
    recipe = select_recipes(["cpt"])[0]
    store = store_for(cfg)
    tracker = Tracker(cfg.tracking.tracking_uri, cfg.tracking.experiment)

    ref_run = tracker.start_run("reference")
    inline = cfg.model_copy(update={"train": cfg.train.model_copy(update={"launcher": "inline"})})
    ref_key, ref_metrics = pipeline.run_stage(inline, recipe, 0, base, data, ref_run, 0)
    reference = load_file(Path(store.url(ref_key)) / "model.safetensors")
    # The same stage lands on the same key: withdraw the reference's outputs so that the
    # stage trains again, from scratch, in its own process.
    fp = pipeline.load_dataset(cfg, data).fingerprint
    prefix = stage_output(cfg, recipe.stages[0], 0, base, fp, 0).checkpoints
    store.rm(ref_key)
    store.rm(prefix)

    run_id = tracker.start_run("killed-and-resumed")
    killer = Killer(store, prefix)
    killer.start()
    try:
        state = one_stage(cfg, recipe, base, data, run_id)
    finally:
        killer.stop.set()
        killer.join(5)
    out = capfd.readouterr()
    assert killer.killed_after is not None, "the training process finished before the kill"
    assert "SIGKILL" in out.err
    assert killer.resume_step is not None and killer.resume_step >= killer.killed_after["step"]
    assert f"resumes after step {killer.resume_step} (" in out.err

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        task_run = client.read_task_run(state.state_details.task_run_id)
    assert state.is_completed() and task_run.run_count == 2

    key, metrics = state.result()
    assert store.read_manifest(key)["resumed_from_step"] == killer.resume_step
    assert metrics == ref_metrics
    assert key == ref_key
    final = load_file(Path(store.url(key)) / "model.safetensors")
    assert final.keys() == reference.keys()
    assert all(torch.equal(final[k], reference[k]) for k in final)

    client = MlflowClient(cfg.tracking.tracking_uri)
    runs = client.search_runs([tracker.experiment_id])
    assert sorted(r.info.run_id for r in runs) == sorted([ref_run, run_id])
    n_epochs = recipe.stages[0].resolved_epochs(cfg.train)
    for name in ("loss_doc", "exact_match", "test_doc_ppl"):
        steps = [m.step for m in client.get_metric_history(run_id, name)]
        assert sorted(steps) == list(range(1, n_epochs + 1)), (name, steps)
        ref_values = [m.value for m in sorted(client.get_metric_history(ref_run, name),
                                              key=lambda m: m.step)]
        values = [m.value for m in sorted(client.get_metric_history(run_id, name),
                                          key=lambda m: m.step)]
        assert values == ref_values, name

    tags = client.get_run(run_id).data.tags
    assert tags["pit.stage0.model"] == store.url(key)
    assert tags["pit.stage0.checkpoints"] == store.url(prefix)
    listed = json.loads(Path(client.download_artifacts(run_id, "stages/stage-0.json")).read_text())
    assert listed["model"] == store.url(key)
    assert 1 <= len(listed["checkpoints"]) <= cfg.checkpoint.keep_last
    assert all(store.is_complete(c[len(store.root) + 1:]) for c in listed["checkpoints"])
