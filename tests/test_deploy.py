"""`pit deploy` against a real Prefect server, and a comparison fanned out to a real worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
PIT = str(Path(sys.executable).with_name("pit"))
ROOT = Path(__file__).resolve().parents[1]


def _pit(args: list[str], env: dict[str, str], cwd: Path | None = None,
         timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([PIT, *args], env=env, cwd=cwd or ROOT, capture_output=True,
                          text=True, timeout=timeout)


def _env(server, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in server.env.items() if k != "MLFLOW_TRACKING_URI"}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def _client(server):
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(server.api_url)


@pytest.fixture(scope="module")
def deployed(prefect_server):
    out = _pit(["deploy", "--gpu-slots", "2"], _env(prefect_server))
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def test_deploy_without_a_server_address_says_which_setting_to_set(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path)
    out = _pit(["deploy"], env)
    assert out.returncode == 2
    assert "PREFECT_API_URL" in out.stderr


def test_deploy_creates_pools_limits_and_module_entrypoint_deployments(prefect_server, deployed):
    with _client(prefect_server) as client:
        pools = {p.name: p for p in client.read_work_pools()}
        assert pools["pit-process"].type == "process"
        gpu = pools["pit-gpu"]
        assert gpu.type == "kubernetes"
        assert "nvidia.com/gpu" in json.dumps(gpu.base_job_template)
        assert {"gpu_count", "node_selector", "tolerations"} <= set(
            gpu.base_job_template["variables"]["properties"])
        assert client.read_concurrency_limit_by_tag("gpu").concurrency_limit == 2
        zombies = client.read_automations_by_name("pit: crash unresponsive flow runs")
        assert len(zombies) == 1 and zombies[0].actions[0].state.value == "CRASHED"
        deployments = {f"{d.name}": d for d in client.read_deployments()}
    assert {"compare-methods", "run-recipe", "build-dataset", "knowledge-refresh"} <= set(
        deployments)
    refresh = deployments["knowledge-refresh"]
    assert [s.schedule.timezone for s in refresh.schedules] == ["UTC"]
    assert refresh.schedules[0].schedule.cron.split()[2:] == ["4,8,12,16", "*", "*"]
    assert refresh.global_concurrency_limit.limit == 1
    assert refresh.concurrency_options.collision_strategy == "CANCEL_NEW"
    refresh_form = refresh.parameter_openapi_schema["definitions"]["RefreshParams"]
    assert "pit++" in json.dumps(refresh_form["properties"]["recipe"])
    compare = deployments["compare-methods"]
    assert compare.entrypoint == "flows.compare.compare_methods"
    assert not compare.pull_steps  # nothing of the deploying machine's folder
    assert compare.work_pool_name == "pit-process"
    assert compare.job_variables["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "60"
    form = compare.parameter_openapi_schema["definitions"]["CompareParams"]["properties"]
    assert "demo" in json.dumps(form["preset"]) and "smoke" in json.dumps(form["preset"])
    assert "pit++" in json.dumps(form["methods"])  # a drop-down of the shipped recipes
    assert form["methods"]["description"]


def test_deploy_names_an_unknown_pool_before_touching_the_server(prefect_server, monkeypatch):
    from flows.deployments import deploy
    from pit.errors import ConfigError

    monkeypatch.setenv("PREFECT_API_URL", prefect_server.api_url)
    with pytest.raises(ConfigError, match="'nowhere' is not a work pool .* pit-gpu, pit-process"):
        deploy(pool="nowhere")


@pytest.mark.slow
def test_parallel_comparison_runs_each_recipe_on_a_worker_and_reruns_read_results_back(
        prefect_server, deployed, tmp_path, tiny_overrides):
    env = _env(prefect_server, PREFECT_WORKER_QUERY_SECONDS="2", PIT_PROGRESS="0")
    worker = subprocess.Popen(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "pit-process",
         "--limit", "4"], env=env, cwd=tmp_path, start_new_session=True,
        stdout=open(tmp_path / "worker.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    args = ["compare", "--preset", "smoke", "--methods", "cpt,pit", "--parallel",
            "--set", f"workdir={tmp_path / 'work'}", "--results", str(tmp_path / "r.json")]
    for o in tiny_overrides:
        args += ["--set", o]
    try:
        first = _pit(args, env, cwd=tmp_path, timeout=900)
        assert first.returncode == 0, first.stdout + first.stderr
        with _client(prefect_server) as client:
            runs = [r for r in client.read_flow_runs() if r.deployment_id is not None]
            recipe_runs = [r for r in runs if r.name.startswith(("cpt-seed", "pit-seed"))]
            assert sorted(r.name for r in recipe_runs) == ["cpt-seed-0", "pit-seed-0"]
            assert all(r.state.is_completed() for r in recipe_runs)
            assert all(r.parent_task_run_id is not None for r in recipe_runs)
        doc = json.loads((tmp_path / "r.json").read_text())
        assert set(doc["methods"]) == {"cpt", "pit"}
        results = list((tmp_path / "work" / "artifacts" / "results").glob("recipe-*"))
        assert len(results) == 2

        again = _pit(args, env, cwd=tmp_path, timeout=600)
        assert again.returncode == 0, again.stdout + again.stderr
        with _client(prefect_server) as client:
            later = [r for r in client.read_flow_runs() if r.deployment_id is not None
                     and r.name.startswith(("cpt-seed", "pit-seed"))]
        assert len(later) == 2  # finished recipes read back, not started again
        redo = json.loads((tmp_path / "r.json").read_text())
        for slug in ("cpt", "pit"):
            assert redo["methods"][slug]["exact_match"] == doc["methods"][slug]["exact_match"]
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)


def _wait_final(client, run_id, timeout: float = 900):
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        run = client.read_flow_run(run_id)
        if run.state is not None and run.state.is_final():
            return run
        time.sleep(2)
    raise AssertionError(f"flow run {run_id} not final after {timeout}s: {run.state}")


@pytest.mark.slow
def test_a_run_started_as_the_ui_does_runs_on_a_worker_into_mlflow(
        prefect_server, deployed, mlflow_server, tmp_path, tiny_overrides):
    from mlflow import MlflowClient

    with _client(prefect_server) as client:
        dep = client.read_deployment_by_name("compare-methods/compare-methods")
        with pytest.raises(Exception, match="(?i)preset|validation|enum"):
            client.create_flow_run_from_deployment(dep.id, parameters={
                "params": {"preset": "no-such-preset"}})
        form = {"params": {"preset": "smoke", "methods": ["cpt"],
                           "overrides": [*tiny_overrides, f"workdir={tmp_path / 'work'}",
                                         "tracking.experiment=from-the-ui"]}}
        run = client.create_flow_run_from_deployment(dep.id, parameters=form)
    env = _env(prefect_server, PIT_PROGRESS="0", MLFLOW_TRACKING_URI=mlflow_server.url)
    worker = subprocess.run(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "pit-process",
         "--run-once"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    with _client(prefect_server) as client:
        final = _wait_final(client, run.id)
    assert final.state.is_completed(), worker.stdout[-3000:] + worker.stderr[-3000:]
    ml = MlflowClient(mlflow_server.url)
    exp = ml.get_experiment_by_name("from-the-ui")
    runs = ml.search_runs([exp.experiment_id])
    nested = [r for r in runs if r.data.tags.get("recipe") == "cpt"]
    assert len(nested) == 1 and nested[0].info.status == "FINISHED"
    assert nested[0].inputs.dataset_inputs  # the runs table's Dataset column
    assert ml.search_logged_models(experiment_ids=[exp.experiment_id])  # the Models tab


def test_deploy_again_updates_in_place(prefect_server, deployed):
    # Last in this file: it moves every deployment to the pit-gpu pool.
    with _client(prefect_server) as client:
        before = {d.name: d.id for d in client.read_deployments()}
    out = _pit(["deploy", "--pool", "pit-gpu"], _env(prefect_server))
    assert out.returncode == 0, out.stderr
    with _client(prefect_server) as client:
        after = {d.name: (d.id, d.work_pool_name) for d in client.read_deployments()}
        assert client.read_concurrency_limit_by_tag("gpu").concurrency_limit == 1
        assert len(client.read_automations_by_name("pit: crash unresponsive flow runs")) == 1
    assert {n: i for n, (i, _) in after.items()} == before
    assert {p for _, p in after.values()} == {"pit-gpu"}
