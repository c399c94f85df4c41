"""`pit compare` SIGKILLed mid-stage; the same command again resumes into the same MLflow runs.

As an operator meets it: a real `pit compare` process (its stage trained
through `accelerate launch`, tracking on a real `mlflow server`) is killed
with its whole process group once a checkpoint inside the stage's second
epoch is published. The training processes, in a group of their own, see
their launcher die, checkpoint and exit: none is left. The same command run
again resumes the stage from the newest checkpoint (the exact step, in the
log and in the stage's manifest), writes the remaining epochs into the very
parent and nested runs the first attempt started, each epoch once, ends with
the metrics of a comparison that was never interrupted, and leaves no run
RUNNING.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest
from mlflow.tracking import MlflowClient
from services import kill_group_when

from pit.storage import Store
from pit.train.checkpoint import latest_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[1]
STAGE = ["--set", "train.launcher=process", "--set", "checkpoint.every_steps=2",
         "--set", "train.doc_batch_size=1", "--set", "train.test_doc_epochs=4"]
EPOCH_METRICS = ("loss_doc", "exact_match", "test_doc_ppl")


def _command(work: Path, experiment: str) -> list[str]:
    return [sys.executable, "-m", "pit.cli", "compare", "--preset", "smoke", "--methods", "cpt",
            *STAGE, "--set", f"workdir={work}", "--set", f"tracking.experiment={experiment}",
            "--results", str(work / "results.json")]


def _env(tmp_path: Path, tracking_uri: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "PIT_"))}
    return {**env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PIT_PROGRESS": "0",
            "PREFECT_HOME": str(tmp_path / "prefect"), "MLFLOW_TRACKING_URI": tracking_uri}


def _run(cmd: list[str], env: dict[str, str]) -> str:
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    return out.stdout + out.stderr


def _mid_second_epoch(checkpoints: Path) -> bool:
    for manifest in checkpoints.glob("*/step-*/MANIFEST.json"):
        m = json.loads(manifest.read_text())
        if m["epoch"] >= 1 and m["batch"] > 0:
            return True
    return False


def _runs(client: MlflowClient, experiment: str) -> dict[str, Any]:
    exp = client.get_experiment_by_name(experiment)
    return {r.info.run_id: r for r in client.search_runs([exp.experiment_id])} if exp else {}


def _curve(client: MlflowClient, run_id: str, name: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, name))


def _without_run_ids(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _without_run_ids(v) for k, v in obj.items() if "run_id" not in k}
    if isinstance(obj, list):
        return [_without_run_ids(v) for v in obj]
    return obj


def test_a_killed_compare_resumes_its_stage_into_the_same_runs_with_the_same_metrics(
        tmp_path, mlflow_server):
    client = MlflowClient(mlflow_server.url)
    experiment = f"kill-resume-{uuid.uuid4().hex[:8]}"
    env = _env(tmp_path, mlflow_server.url)
    work = tmp_path / "killed"
    cmd = _command(work, experiment)
    checkpoints = work / "artifacts" / "checkpoints"

    family = kill_group_when(cmd, env, ROOT, tmp_path / "first.log",
                             lambda: _mid_second_epoch(checkpoints),
                             "checkpoint inside the second epoch")
    training = [p for p, line in family.items() if "pit.train.launch" in line]
    assert training, "no training process was running at the kill"
    # In a process group of their own, the training processes outlive the group kill; they
    # see their launcher gone, checkpoint and exit by themselves.
    _, left = psutil.wait_procs(list(family), timeout=180)
    assert left == [], [p.cmdline() for p in left]

    (prefix,) = checkpoints.iterdir()
    store = Store(str(work / "artifacts"))
    step = latest_checkpoint(store, f"checkpoints/{prefix.name}").step
    assert step > 0
    stage_models = list((work / "artifacts" / "stages").glob("*/MANIFEST.json"))
    assert stage_models == [], "the stage finished before the kill"
    before = _runs(client, experiment)
    assert {r.info.status for r in before.values()} == {"RUNNING"}  # left by the dead process
    (nested,) = [i for i, r in before.items() if "mlflow.parentRunId" in r.data.tags]
    (parent,) = [i for i in before if i != nested]
    logged_before = [s for s, _ in _curve(client, nested, "loss_doc")]
    assert logged_before and logged_before == list(range(1, len(logged_before) + 1))

    out = _run(cmd, env)
    assert f"resumes after step {step} (" in out
    (stage_manifest,) = (work / "artifacts" / "stages").glob("*/MANIFEST.json")
    assert json.loads(stage_manifest.read_text())["resumed_from_step"] == step

    after = _runs(client, experiment)
    assert set(after) == {parent, nested}
    assert {r.info.status for r in after.values()} == {"FINISHED"}
    assert after[nested].data.tags["mlflow.parentRunId"] == parent
    assert after[parent].data.tags["pit.attempts"] == after[nested].data.tags["pit.attempts"] == "2"
    for name in EPOCH_METRICS:
        assert [s for s, _ in _curve(client, nested, name)] == [1, 2, 3, 4], name
    assert [s for s, _ in _curve(client, parent, "base_retention_em")] == [0]

    reference_work = tmp_path / "uninterrupted"
    reference_experiment = f"{experiment}-uninterrupted"
    _run(_command(reference_work, reference_experiment), env)
    reference = json.loads((reference_work / "results.json").read_text())
    resumed = json.loads((work / "results.json").read_text())
    assert resumed["mlflow_parent_run_id"] == parent
    assert resumed["methods"]["cpt"]["mlflow_run_id"] == nested
    assert _without_run_ids(resumed["methods"]) == _without_run_ids(reference["methods"])
    (reference_nested,) = [i for i, r in _runs(client, reference_experiment).items()
                           if "mlflow.parentRunId" in r.data.tags]
    for name in EPOCH_METRICS:
        assert _curve(client, nested, name) == _curve(client, reference_nested, name), name
