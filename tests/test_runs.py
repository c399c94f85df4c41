"""Which MLflow run a comparison writes to: an earlier attempt's, found by content, or a new one.

Against a real MLflow store (SQLite). A "dead holder" is a process that ran
here and exited, so its pid and start time name no living process.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from pit import runs
from pit.config_sources import load_config
from pit.processes import holder, identity
from pit.recipe import select_recipes
from pit.runs import HEARTBEAT_TAG, HOLDER_TAG, comparison_hash, held, open_run, sweep
from pit.tracking import Tracker


@pytest.fixture(scope="module")
def uri(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('runs') / 'mlflow.db'}"


@pytest.fixture
def tracker(uri, request) -> Tracker:
    """A tracker on an experiment of the test's own: one store, created once, for all tests."""
    return Tracker(uri, request.node.name)


@pytest.fixture(scope="module")
def dead_holder() -> str:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    name = f"{socket.gethostname()}/{identity(proc.pid)}"
    proc.wait()
    return name


def _left_running(tracker: Tracker, run_id: str, by: str, beat: float | None = None) -> None:
    tracker.set_tags(run_id, {HOLDER_TAG: by, HEARTBEAT_TAG: f"{beat or time.time():.0f}"})


def _status(tracker: Tracker, run_id: str) -> str:
    return tracker.client.get_run(run_id).info.status


def test_a_run_left_running_by_a_dead_process_is_taken_over(tracker, dead_holder):
    first = open_run(tracker, "compare-smoke", "h1")
    _left_running(tracker, first, dead_holder)
    again = open_run(tracker, "compare-smoke", "h1")
    assert again == first
    assert _status(tracker, first) == "RUNNING"
    assert tracker.client.get_run(first).data.tags["pit.attempts"] == "2"


def test_a_run_whose_holder_lives_is_not_taken(tracker):
    first = open_run(tracker, "compare-smoke", "h1")
    with held(tracker, first):
        assert tracker.client.get_run(first).data.tags[HOLDER_TAG] == holder()
        second = open_run(tracker, "compare-smoke", "h1")
    assert second != first


def test_a_failed_or_killed_run_is_taken_a_finished_one_is_not(tracker):
    failed = open_run(tracker, "compare-smoke", "h1")
    tracker.end_run(failed, "FAILED")
    assert open_run(tracker, "compare-smoke", "h1") == failed
    tracker.end_run(failed, "FINISHED")
    fresh = open_run(tracker, "compare-smoke", "h1")
    assert fresh != failed
    assert open_run(tracker, "compare-smoke", "h2") not in (failed, fresh)


def test_under_a_taken_parent_a_finished_recipe_run_is_taken_too_and_never_another_parents(
        tracker, dead_holder):
    parent = open_run(tracker, "compare-smoke", "p")
    child = open_run(tracker, "cpt-seed0", "r", parent_id=parent)
    tracker.end_run(child)
    _left_running(tracker, parent, dead_holder)
    assert open_run(tracker, "compare-smoke", "p") == parent
    assert open_run(tracker, "cpt-seed0", "r", parent_id=parent) == child
    assert _status(tracker, child) == "RUNNING"
    other = open_run(tracker, "compare-smoke", "p2")
    assert open_run(tracker, "cpt-seed0", "r", parent_id=other) != child


def test_a_holder_on_another_host_is_gone_only_once_its_heartbeat_is_stale(tracker):
    run_id = open_run(tracker, "compare-smoke", "h1")
    elsewhere = "another-host/4242:1.000"
    _left_running(tracker, run_id, elsewhere, beat=time.time() - 10)
    assert open_run(tracker, "compare-smoke", "h1") != run_id
    _left_running(tracker, run_id, elsewhere, beat=time.time() - runs.STALE_SECONDS - 5)
    assert open_run(tracker, "compare-smoke", "h1") == run_id


def test_sweep_marks_killed_the_runs_of_dead_holders_only(tracker, dead_holder):
    dead = open_run(tracker, "compare-smoke", "old-config")
    _left_running(tracker, dead, dead_holder)
    alive = open_run(tracker, "compare-smoke", "h1")
    foreign = tracker.start_run("not-pit")  # no holder: nobody's to judge
    with held(tracker, alive):
        assert sweep(tracker) == [dead]
    assert _status(tracker, dead) == "KILLED"
    assert _status(tracker, alive) == "RUNNING"
    assert _status(tracker, foreign) == "RUNNING"


def test_the_heartbeat_is_refreshed_while_a_run_is_held(tracker, monkeypatch):
    monkeypatch.setattr(runs, "HEARTBEAT_SECONDS", 0.2)
    run_id = open_run(tracker, "compare-smoke", "h1")
    client = MlflowClient(tracker.uri)
    with held(tracker, run_id):
        first = float(client.get_run(run_id).data.tags[HEARTBEAT_TAG])
        time.sleep(1.5)
        later = float(client.get_run(run_id).data.tags[HEARTBEAT_TAG])
    assert later > first


def test_the_comparison_hash_follows_what_the_comparison_computes_not_where_it_runs(tmp_path):
    cfg = load_config("smoke", None, [])
    recipes = select_recipes(["cpt", "pit"])
    base = comparison_hash(cfg, recipes, "fp")
    moved = cfg.model_copy(update={"workdir": str(tmp_path), "tracking": cfg.tracking})
    assert comparison_hash(moved, recipes, "fp") == base
    assert comparison_hash(cfg, recipes[:1], "fp") != base
    assert comparison_hash(cfg, recipes, "other data") != base
    assert comparison_hash(cfg.model_copy(update={"seeds": 3}), recipes, "fp") != base
    longer = cfg.model_copy(update={"train": cfg.train.model_copy(update={"pit_epochs": 9})})
    assert comparison_hash(longer, recipes, "fp") != base
