"""The MLflow runs of a comparison, found again by what they compute.

Outputs and checkpoints are keyed by content (`pit.keys`), so a comparison
started again after its process died (SIGKILL, the out-of-memory killer, a
lost pod, a Crashed flow run) finds its finished stages and the newest
checkpoint of the unfinished one. Its runs are found the same way: the parent
run carries a hash of the comparison (config, recipes, seeds, data set) and
each nested run a hash of its recipe and seed, so the second attempt writes
the rest of each curve into the very runs the first one started; the
tracking callback's `once` keeps each epoch's metrics to one value.

Which runs may be taken: one not FINISHED (a comparison that finished is
run anew, into new runs, reusing every stage), and among those, none whose
process still runs. Each run pit writes to carries its holder (host, pid and
start time, `pit.processes`) and a heartbeat that a thread refreshes while
it is held. A RUNNING run is abandoned when its holder is a dead process of
this host, or its heartbeat is older than `STALE_SECONDS` (a holder on
another host). A second comparison of the same config started while the
first runs therefore gets runs of its own. Abandoned runs that nothing takes
(their config changed since) are marked KILLED by the next comparison in the
experiment, so no run stays RUNNING for ever. Tags cannot be swapped
atomically: two attempts started in the same second after a crash may both
take the same run.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pit.config import PitConfig
from pit.keys import NOT_IN_KEYS
from pit.processes import holder, holder_alive
from pit.recipe import Recipe
from pit.storage import fingerprint
from pit.tracking import Tracker

if TYPE_CHECKING:
    from mlflow.entities import Run

log = logging.getLogger(__name__)

HASH_TAG = "pit.run_hash"
HOLDER_TAG = "pit.holder"
HEARTBEAT_TAG = "pit.heartbeat"
ATTEMPTS_TAG = "pit.attempts"
HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 180.0

# The number of seeds changes a comparison's table, so unlike an output key it is in.
_NOT_IN_RUNS = [f"config.{f}" for f in NOT_IN_KEYS if f != "seeds"]


def comparison_hash(cfg: PitConfig, recipes: list[Recipe], dataset_fingerprint: str) -> str:
    """What a comparison's parent run holds: its config, its recipes as defined, its data."""
    return fingerprint({"run": "comparison", "config": cfg, "recipes": recipes},
                       exclude=_NOT_IN_RUNS, inputs={"dataset": dataset_fingerprint})


def recipe_hash(cfg: PitConfig, recipe: Recipe, seed: int, dataset_fingerprint: str,
                base_ref: str) -> str:
    """What a recipe's nested run holds: the recipe, its seed, its data and base model."""
    return fingerprint({"run": "recipe", "config": cfg, "recipe": recipe, "seed": seed},
                       exclude=_NOT_IN_RUNS,
                       inputs={"dataset": dataset_fingerprint, "base": base_ref})


def abandoned(run: Run, now: float | None = None) -> bool:
    """Whether a RUNNING run's holder is gone; a run without a holder is nobody's to take."""
    tags = run.data.tags
    if HOLDER_TAG not in tags:
        return False
    here = holder_alive(tags[HOLDER_TAG])
    if here is not None:
        return not here
    beat = float(tags.get(HEARTBEAT_TAG, 0) or 0)
    return (time.time() if now is None else now) - beat > STALE_SECONDS


def _takeable(run: Run, reuse_finished: bool) -> bool:
    status = run.info.status
    if status == "FINISHED":
        return reuse_finished
    return status != "RUNNING" or abandoned(run)


def open_run(tracker: Tracker, name: str, run_hash: str, *, parent_id: str | None = None,
             tags: dict[str, str] | None = None) -> str:
    """The run to write to: an earlier attempt's run of `run_hash` taken over, else a new one.

    Under a parent, a FINISHED nested run is taken too: the parent was taken
    over, and its recipe's run should not appear twice in it.
    """
    for run in tracker.tagged_runs(HASH_TAG, run_hash, parent_id):
        if parent_id is None and run.data.tags.get("mlflow.parentRunId"):
            continue
        if not _takeable(run, reuse_finished=parent_id is not None):
            continue
        run_id = run.info.run_id
        attempts = int(run.data.tags.get(ATTEMPTS_TAG, "1")) + 1
        tracker.reopen(run_id)
        tracker.set_tags(run_id, {ATTEMPTS_TAG: str(attempts)})
        log.info("MLflow run %s (%s, left %s by an earlier attempt) continues as attempt %d",
                 run_id, name, run.info.status, attempts)
        return run_id
    return tracker.start_run(name, parent_id,
                             tags={**(tags or {}), HASH_TAG: run_hash, ATTEMPTS_TAG: "1"})


def sweep(tracker: Tracker) -> list[str]:
    """Mark KILLED every RUNNING run of the experiment whose holder is gone; their ids."""
    swept = []
    for run in tracker.running_runs():
        if abandoned(run):
            tracker.end_run(run.info.run_id, "KILLED")
            tracker.set_tags(run.info.run_id, {"pit.ended_by": f"{holder()} (holder gone)"})
            swept.append(run.info.run_id)
    if swept:
        log.warning("marked KILLED %d MLflow run(s) whose process had died: %s", len(swept),
                    ", ".join(swept))
    return swept


@contextlib.contextmanager
def held(tracker: Tracker, run_id: str) -> Iterator[None]:
    """Mark `run_id` as this process's and keep its heartbeat fresh, for the time of the body."""
    stop = threading.Event()

    def beat() -> None:
        tracker.set_tags(run_id, {HEARTBEAT_TAG: f"{time.time():.0f}"})

    def keep_beating() -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            try:
                beat()
            except Exception as e:  # a busy tracking server must not end the comparison
                log.warning("heartbeat of MLflow run %s failed: %s", run_id, e)

    tracker.set_tags(run_id, {HOLDER_TAG: holder()})
    beat()
    thread = threading.Thread(target=keep_beating, daemon=True, name=f"pit-heartbeat-{run_id}")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
