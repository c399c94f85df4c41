"""Prefect tasks over `pit.refresh`: each calls one pit function and returns small results.

A mirror or the tracking server that stays down past pit's own retries is
tried again later (`tasks.retries.retry_if_transient`); bad input (a damaged
dump, a champion whose model is gone from the store) fails at once. Training
and the base model reuse the comparison's tasks (`tasks.training`).
"""

from __future__ import annotations

import re
from pathlib import Path

from mlflow.entities.model_registry import ModelVersion
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from pit.artifacts import model_path, store_for
from pit.config import PitConfig
from pit.refresh.delta import build_month
from pit.refresh.gate import Verdict
from pit.refresh.mirror import fetch_dump, newer_dump
from pit.refresh.outcome import Outcome
from pit.refresh.registry import Promotion, Registry
from pit.refresh.scores import month_scores
from pit.refresh.snapshot import build_snapshot
from pit.refresh.state import RefreshState, save_state
from pit.wiki.dump import DumpInfo
from tasks.retries import retry_if_transient

_COMMON = {"cache_policy": NO_CACHE, "retry_condition_fn": retry_if_transient}


@task(name="find-new-dump", retries=2, retry_delay_seconds=[60, 300], tags=["wiki"], **_COMMON)
def find_new_dump(mirror: str, wiki: str, after: str | None) -> DumpInfo | None:
    """The newest finished dump after the last one processed, or None (a quick no-op)."""
    return newer_dump(mirror, wiki, after)


@task(name="fetch-dump", retries=3, retry_delay_seconds=[10, 60, 300], tags=["wiki", "download"],
      **_COMMON)
def download_dump(info: DumpInfo, cache: str) -> tuple[Path, Path]:
    """The dump and its index on this machine (a retry resumes the download)."""
    return fetch_dump(info, cache)


@task(name="build-snapshot", retries=1, tags=["wiki"], **_COMMON)
def snapshot(cfg: PitConfig, info: DumpInfo, dump: Path, index: Path, category: str,
             old_category: str | None, workers: int | None) -> str:
    """The dump's `pit data wiki` snapshot in the store (built once per dump and settings)."""
    return build_snapshot(cfg, info, dump, index, category, old_category, workers)


@task(name="build-month", retries=1, tags=["data"], **_COMMON)
def month(cfg: PitConfig, snapshot_key: str, previous_key: str | None) -> str:
    """The month's data set in the store: its key."""
    return build_month(cfg, snapshot_key, previous_key)[0]


@task(name="score-month", task_run_name="score-{label}", retries=2, tags=["eval"], **_COMMON)
def score(cfg: PitConfig, model_ref: str, data_ref: str, label: str) -> dict[str, float | None]:
    """Acquisition and retention of one model on the month (cached by content)."""
    return month_scores(cfg, model_ref, data_ref)


@task(name="register-version", retries=2, tags=["registry"], **_COMMON)
def register(cfg: PitConfig, uri: str, name: str, run_id: str, model_ref: str,
             tags: dict[str, str], description: str) -> ModelVersion:
    """The model's files into the month's run, then one version with every tag, created last."""
    registry = Registry(uri, name)
    registry.client.log_artifacts(run_id, model_path(cfg, model_ref), "model")
    return registry.register(f"runs:/{run_id}/model", run_id, tags, description)


@task(name="promote", retries=2, tags=["registry"], **_COMMON)
def promote(uri: str, name: str, version: ModelVersion, verdict: Verdict) -> Promotion:
    """`challenger` on the version; `champion` too if the gate passed and it did not move."""
    return Registry(uri, name).promote(version, verdict)


@task(name="save-state", retries=2, tags=["data"], **_COMMON)
def save(cfg: PitConfig, state: RefreshState) -> None:
    """The refresh state, written last: the month is done."""
    save_state(store_for(cfg), state)


@task(name="publish-report", tags=["report"], cache_policy=NO_CACHE)
def publish_report(outcome: Outcome) -> None:
    """The month's table, with links to its MLflow run and model version, as an artifact."""
    slug = re.sub(r"[^a-z0-9-]+", "-", outcome.registered_model.lower()).strip("-")
    create_markdown_artifact(
        key=f"knowledge-refresh-{slug}", markdown=outcome.markdown(),
        description=f"Knowledge refresh of {outcome.registered_model}: {outcome.status}",
    )
