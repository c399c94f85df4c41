"""Two `pit compare` of the same comparison started together: both finish, with the same results.

As users meet it: two real `pit compare` processes, started at the same
moment, each with a Prefect home of its own.

* On one fresh work folder, with the default tracking store: both open the
  SQLite file MLflow must first create and migrate (the migration runs under
  a lock beside it), and both reach the same data set, base model and stage.
  The second waits for the first at each output and reuses it: the stage is
  trained once and recorded as reused in the other's run.
* On two work folders (two hosts) sharing one bucket of a real S3 server:
  nothing holds either back, so both train the same stage and publish the
  same keys, checkpoints included, at the same time; the store keeps each
  published output whole.

Either way each process ends with its own FINISHED runs and the very
metrics of the other.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from test_s3_compare import aws_env

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[1]


def _command(work: Path, results: Path, overrides: list[str], *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "pit.cli", "compare", "--preset", "smoke", "--methods", "cpt",
           "--set", f"workdir={work}", "--set", "checkpoint.every_steps=1",
           "--results", str(results), *extra]
    for o in overrides:
        cmd += ["--set", o]
    return cmd


def _env(prefect_home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "PIT_", "MLFLOW_", "AWS_"))}
    return {**env, **(extra or {}), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
            "PIT_PROGRESS": "0", "PREFECT_HOME": str(prefect_home)}


def _run_together(tmp_path: Path, commands: list[list[str]], envs: list[dict[str, str]]) -> None:
    """Start every command at once (cwd `tmp_path`, where MLflow's local artifacts go); wait."""
    logs = [(tmp_path / f"process-{i}.log").open("w") for i in range(len(commands))]
    procs = [subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
             for cmd, env, log in zip(commands, envs, logs, strict=True)]
    try:
        codes = [p.wait(timeout=900) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
    for i, code in enumerate(codes):
        assert code == 0, f"process {i}:\n" + (tmp_path / f"process-{i}.log").read_text()[-6000:]


def _results(path: Path) -> dict[str, Any]:
    """A results document without what differs between two runs of one comparison."""

    def strip(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if "run_id" not in k and k != "seconds"}
        if isinstance(obj, list):
            return [strip(v) for v in obj]
        return obj

    return strip(json.loads(path.read_text()))


def _finished_runs(client: MlflowClient, experiment: str) -> dict[str, list[str]]:
    """The parent and nested run ids of an experiment; every run must have FINISHED."""
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert {r.info.status for r in runs} == {"FINISHED"}, [(r.info.run_id, r.info.status)
                                                           for r in runs]
    return {"parents": [r.info.run_id for r in runs if "mlflow.parentRunId" not in r.data.tags],
            "nested": [r.info.run_id for r in runs if "mlflow.parentRunId" in r.data.tags]}


def _stage_record(client: MlflowClient, run_id: str, dest: Path) -> dict[str, Any]:
    path = client.download_artifacts(run_id, "stages/stage-0.json", str(dest))
    return json.loads(Path(path).read_text())


def _curve(client: MlflowClient, run_id: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, "loss_doc"))


def test_two_comparisons_at_once_on_one_work_folder_share_its_outputs_and_both_finish(
        tmp_path, tiny_overrides):
    work = tmp_path / "work"
    results = [tmp_path / "a.json", tmp_path / "b.json"]
    _run_together(tmp_path, [_command(work, r, tiny_overrides) for r in results],
                  [_env(tmp_path / f"prefect-{i}") for i in range(2)])

    assert _results(results[0]) == _results(results[1])
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    runs = _finished_runs(client, "pit")
    assert len(runs["parents"]) == 2 and len(runs["nested"]) == 2
    records = [_stage_record(client, r, tmp_path / r) for r in runs["nested"]]
    assert sorted(r["reused"] for r in records) == [False, True]  # trained once, then reused
    assert records[0]["model"] == records[1]["model"]
    curves = [_curve(client, r) for r in runs["nested"]]
    assert curves[0] == curves[1] and [s for s, _ in curves[0]] == [1, 2]


def test_two_comparisons_at_once_on_two_work_folders_sharing_one_bucket_both_finish(
        tmp_path, tiny_overrides, s3_server):
    bucket = s3_server.create_bucket()
    works = [tmp_path / "host-a", tmp_path / "host-b"]
    for work in works:
        work.mkdir()
    results = [w / "results.json" for w in works]
    root = f"s3://{bucket}/pit"
    _run_together(tmp_path, [_command(w, r, tiny_overrides, "--artifact-root", root)
                             for w, r in zip(works, results, strict=True)],
                  [_env(w / "prefect", {**aws_env(s3_server.endpoint_url),
                                        "AWS_SHARED_CREDENTIALS_FILE": str(w / "no-credentials"),
                                        "AWS_CONFIG_FILE": str(w / "no-config")})
                   for w in works])

    assert _results(results[0]) == _results(results[1])
    curves = []
    for work in works:
        client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
        runs = _finished_runs(client, "pit")
        (nested,) = runs["nested"]
        record = _stage_record(client, nested, work / "stage-record")
        assert record["model"].startswith(f"{root}/")
        curves.append(_curve(client, nested))
    assert curves[0] == curves[1] and [s for s, _ in curves[0]] == [1, 2]
    keys = [o["Key"] for page in s3_server.client().get_paginator("list_objects_v2")
            .paginate(Bucket=bucket) for o in page.get("Contents", [])]
    stage_manifests = [k for k in keys if k.startswith("pit/stages/") and
                       k.endswith("/MANIFEST.json")]
    assert len(stage_manifests) == 1, stage_manifests
