"""A comparison's recipes as flow runs of their own, so several workers train them at once.

`compare-methods` with `parallel` starts one flow run of the `run-recipe`
deployment per recipe and seed and waits for them. Each run publishes its
result to the artifact store under the content hash of what produced it
(config, recipe, seed, data set, base model), so a comparison started again
after a crash reads the finished ones back and starts only the others; a
run that crashed (its pod evicted, its machine gone) is started again once
before the comparison gives up on it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from pydantic import BaseModel, Field

from pit.artifacts import store_for
from pit.config import PitConfig
from pit.errors import PitError
from pit.recipe import Recipe
from pit.runs import recipe_hash
from pit.tracking import tracking_uri

RECIPE_DEPLOYMENT = "run-recipe-job/run-recipe"
RESULT_FILE = "result.json"
RESTARTS = 1


class RecipeJob(BaseModel):
    """Everything one recipe and seed of a comparison needs, and nothing to look up locally."""

    config: dict[str, Any] = Field(..., description="The comparison's whole config.")
    recipe: dict[str, Any] = Field(..., description="The recipe as defined (stages and all).")
    seed: int = Field(0, ge=0)
    data_ref: str = Field(..., description="Store key of the data set.")
    base_ref: str = Field(..., description="Store key of the base model.")
    retention_before: float | None = None
    parent_run_id: str | None = Field(None, description="MLflow run of the comparison.")
    dataset_fingerprint: str = ""

    def pit_config(self) -> PitConfig:
        return PitConfig.model_validate(self.config)

    def pit_recipe(self) -> Recipe:
        return Recipe.model_validate(self.recipe)

    def result_key(self) -> str:
        digest = recipe_hash(self.pit_config(), self.pit_recipe(), self.seed,
                             self.dataset_fingerprint, self.base_ref)
        return f"results/recipe-{digest}"


def portable_config(cfg: PitConfig) -> dict[str, Any]:
    """`cfg` as a worker elsewhere must read it: local paths absolute, the tracking URI pinned.

    A tracking URI with credentials in it is left to the workers' own
    MLFLOW_TRACKING_URI: flow-run parameters are shown in the Prefect UI.
    """
    data = cfg.model_dump(mode="json")
    data["workdir"] = str(Path(cfg.workdir).resolve())
    if "://" not in cfg.storage.root:
        data["storage"]["root"] = str(Path(cfg.storage.root).resolve())
    uri = tracking_uri(cfg.tracking.tracking_uri, cfg.workdir)
    if "@" not in urlsplit(uri).netloc:
        data["tracking"]["tracking_uri"] = uri
    return data


def read_result(job: RecipeJob) -> dict[str, Any] | None:
    """The published result of `job`, or None while it has none."""
    store = store_for(job.pit_config())
    key = job.result_key()
    if not store.is_complete(key):
        return None
    return json.loads(store.read_file(key, RESULT_FILE))


def _publish_result(job: RecipeJob, result: dict[str, Any]) -> None:
    store = store_for(job.pit_config())
    with store.staging(job.result_key(), {"recipe": job.recipe["slug"], "seed": job.seed}) as d:
        (Path(d) / RESULT_FILE).write_text(json.dumps(result))


@flow(name="run-recipe-job", flow_run_name="{job.recipe[slug]}-seed-{job.seed}")
def run_recipe_job(job: RecipeJob) -> str:
    """One recipe and seed of a comparison on whichever worker picked it up."""
    from flows.compare import run_recipe_stages

    if read_result(job) is None:
        out = run_recipe_stages(job.pit_config(), job.pit_recipe(), job.seed, job.data_ref,
                                job.base_ref, job.retention_before, job.parent_run_id,
                                job.dataset_fingerprint)
        _publish_result(job, out)
    return job.result_key()


def _start(job: RecipeJob, deployment: str) -> str:
    from prefect.deployments import run_deployment

    run = run_deployment(deployment, parameters={"job": job.model_dump(mode="json")},
                         timeout=0, as_subflow=True)
    return str(run.id)


def run_jobs(jobs: list[RecipeJob], deployment: str = RECIPE_DEPLOYMENT,
             poll_s: float = 5.0) -> list[dict[str, Any]]:
    """Results of every job, in order: read back when published, else run on the pool."""
    logger = get_run_logger()
    results: dict[int, dict[str, Any]] = {}
    running: dict[int, str] = {}
    restarts: dict[int, int] = {}
    for i, job in enumerate(jobs):
        done = read_result(job)
        if done is not None:
            logger.info("%s seed %d: finished earlier, result read back",
                        job.recipe["slug"], job.seed)
            results[i] = done
        else:
            running[i] = _start(job, deployment)
    failed: list[str] = []
    with get_client(sync_client=True) as client:
        while running:
            time.sleep(poll_s)
            for i, run_id in list(running.items()):
                state = client.read_flow_run(run_id).state
                if state is None or not state.is_final():
                    continue
                del running[i]
                job = jobs[i]
                done = read_result(job)
                if done is not None:
                    results[i] = done
                elif state.is_crashed() and restarts.get(i, 0) < RESTARTS:
                    restarts[i] = restarts.get(i, 0) + 1
                    logger.warning("%s seed %d: flow run %s crashed; starting it again",
                                   job.recipe["slug"], job.seed, run_id)
                    running[i] = _start(job, deployment)
                else:
                    failed.append(f"{job.recipe['slug']} seed {job.seed} (flow run {run_id}, "
                                  f"{state.name})")
    if failed:
        raise PitError("recipe flow runs ended without a result: " + "; ".join(failed)
                       + ". See them in the Prefect UI; run the comparison again to retry "
                       "them (finished recipes are read back, not retrained).")
    return [results[i] for i in range(len(jobs))]
