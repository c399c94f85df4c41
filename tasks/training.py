"""Prefect tasks over the steps of `pit.pipeline`: one task per step, retries, nothing else.

Each returns keys into the artifact store and small metric dicts, never
tensors or data sets, so a retried or remote task needs nothing but its
arguments. The steps cache their outputs by content themselves.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from pit import pipeline
from pit.artifacts import store_for
from pit.config import PitConfig
from pit.recipe import Recipe
from pit.retry import is_transient
from pit.train.launch import TrainingProcessError
from tasks.retries import failure

if TYPE_CHECKING:
    from prefect import Task
    from prefect.client.schemas.objects import TaskRun
    from prefect.states import State


def _retry_transient_or_killed(task: Task, task_run: TaskRun, state: State) -> bool:
    """Retry outages (pit's rule) and a training process that died (killed, out of memory).

    A dead training process resumes from its newest checkpoint on the retry;
    bad input (a missing bucket stays missing) and bugs are not retried.
    """
    exc = failure(state)
    return exc is not None and (is_transient(exc) or isinstance(exc, TrainingProcessError))


_COMMON = {"cache_policy": NO_CACHE, "retry_delay_seconds": 2,
           "retry_condition_fn": _retry_transient_or_killed}
# Tasks that occupy an accelerator hold a slot of the `gpu` tag's concurrency limit
# (`pit deploy --gpu-slots N` creates it), so flow runs sharing a machine take turns on it.
GPU = "gpu"


@task(name="build-dataset", retries=2, tags=["data"], **_COMMON)
def build_dataset(cfg: PitConfig) -> str:
    """The synthetic world built and published, or the published data set located."""
    return pipeline.build_dataset(cfg)


@task(name="pretrain-base", retries=2, tags=["train", GPU], **_COMMON)
def build_base(cfg: PitConfig, data_ref: str) -> str:
    return pipeline.build_base(cfg, data_ref)


@task(name="base-retention", retries=2, tags=["eval", GPU], **_COMMON)
def base_retention(cfg: PitConfig, model_ref: str, data_ref: str) -> float | None:
    return pipeline.base_retention(cfg, model_ref, data_ref)


@task(name="run-stage", task_run_name="{recipe.slug}-stage-{index}-seed-{seed}", retries=2,
      tags=["train", GPU], **_COMMON)
def run_stage(cfg: PitConfig, recipe: Recipe, index: int, model_ref: str, data_ref: str,
              run_id: str | None, seed: int = 0) -> tuple[str, dict[str, float]]:
    """One stage, reused if published, else trained; a retry resumes from its newest checkpoint."""
    key, metrics = pipeline.run_stage(cfg, recipe, index, model_ref, data_ref, run_id, seed)
    url = store_for(cfg).url(key)
    rows = "\n".join(f"| {k} | {v:.4g} |" for k, v in sorted(metrics.items()))
    slug = re.sub(r"[^a-z0-9-]+", "-", recipe.slug.replace("+", "plus").lower())
    create_markdown_artifact(
        key=f"{slug}-stage-{index}-seed-{seed}",
        markdown=f"**{recipe.slug}** stage {index} (seed {seed})\n\nmodel: `{url}`\n\n"
        f"MLflow run: `{run_id}`\n\n| metric | value |\n|---|---|\n{rows}\n",
        description=f"Model and last-epoch metrics of {recipe.slug} stage {index}",
    )
    return key, metrics


@task(name="evaluate", task_run_name="evaluate-{recipe.slug}-seed-{seed}", retries=2,
      tags=["eval", GPU], **_COMMON)
def evaluate(cfg: PitConfig, recipe: Recipe, model_ref: str, data_ref: str, run_id: str | None,
             retention_before: float | None, step: int = 0, seed: int = 0) -> dict[str, Any]:
    """Final metrics, and each test question's exact match (for paired tests between recipes)."""
    out = pipeline.evaluate(cfg, recipe, model_ref, data_ref, run_id, retention_before, step)
    return {"metrics": out["metrics"],
            "per_question": {r["qa_id"]: r["exact_match"] for r in out["predictions"]}}
