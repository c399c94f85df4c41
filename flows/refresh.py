"""The `knowledge_refresh` flow: learn the newest dump's pages, promote only what passes the gate.

One run processes at most one dump (`pit refresh` runs it once; the
`knowledge-refresh` deployment runs it on a monthly schedule):

1. the newest finished dump on the mirror newer than the last one processed
   (the refresh state in the artifact store); none: a quick no-op;
2. its snapshot of the categories, built as `pit data wiki` builds one, and
   the month's data set: new and changed pages to learn (test), earlier
   months' pages to train on (train), the old world (old);
3. the recipe continues the `champion` version (the base model on the first
   month), each stage through the comparison's own task, so a killed stage
   resumes from its newest checkpoint and a finished one is reused;
4. champion and challenger scored on the month's held-out questions
   (acquisition) and on earlier months' and the probe set's (retention);
5. the version registered with its figures, `challenger` set, `champion`
   moved (keeping `previous-champion`) only if the gate passes;
6. a Prefect artifact with the table, and the state, written last.

A month that failed anywhere is the same month when run again: every output
is found by content, the MLflow run by hash (`pit.runs`), the version by dump
date and data set fingerprint, so it resumes and never registers twice.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from pit.artifacts import model_url, store_for
from pit.config import PitConfig
from pit.data.checks import check_dataset
from pit.data.dataset import KnowledgeDataset
from pit.data.source import load_dataset
from pit.data.views import eval_documents
from pit.errors import DataError
from pit.modeling import check_model
from pit.recipe import Recipe
from pit.refresh.gate import Gate, Verdict
from pit.refresh.outcome import FIGURES, Outcome
from pit.refresh.params import RefreshParams
from pit.refresh.registry import (
    CHAMPION,
    MODEL_KEY_TAG,
    START_TAG,
    Registry,
    run_url,
    version_tags,
    version_url,
)
from pit.refresh.scores import month_figures
from pit.refresh.state import MonthRecord, RefreshState, load_state
from pit.runs import held, open_run, recipe_hash, sweep
from pit.tracking import tracker_for
from pit.wiki.dump import DumpInfo
from tasks import refresh as t
from tasks import training as tt

__all__ = ["RefreshParams", "knowledge_refresh", "refresh"]


@flow(name="knowledge-refresh", flow_run_name="refresh-{params.registered_model}")
def knowledge_refresh(params: RefreshParams) -> dict[str, Any]:
    """One knowledge refresh: the newest new dump learned, gated, registered; the results."""
    return refresh(params).document()


def refresh(params: RefreshParams) -> Outcome:
    """The steps of `knowledge_refresh`, inside its flow run; the month's outcome."""
    params.validate_all()
    cfg = params.config()
    recipe = params.recipe_for()
    check_model(cfg.model)
    state = load_state(store_for(cfg), params.registered_model)
    info = t.find_new_dump(params.mirror, params.wiki, state.last_dump)
    if info is None:
        outcome = Outcome("no-new-dump", params.registered_model, dump_date=state.last_dump)
        t.publish_report(outcome)
        return outcome
    dump, index = t.download_dump(info, params.cache)
    snap = t.snapshot(cfg, info, dump, index, params.category, params.old_category,
                      params.workers)
    data_ref = t.month(cfg, snap, state.last.snapshot_key if state.last else None)
    ds = load_dataset(cfg, data_ref)
    record = MonthRecord(dump_date=info.date, month_index=len(state.months),
                         status="no-new-dump", snapshot_key=snap, dataset_key=data_ref,
                         dataset_fingerprint=ds.fingerprint)
    if not eval_documents(ds, cfg.data):
        outcome = Outcome("no-new-dump", params.registered_model, dump_date=info.date,
                          gate_reason=f"dump {info.date} has no new or changed pages in the "
                          "categories", changes=ds.meta.get("changes") or {})
    else:
        check_dataset(ds, cfg, [recipe])
        outcome = _learn(params, cfg, recipe, state, info, data_ref, ds)
    t.publish_report(outcome)
    record = record.model_copy(update={
        "status": outcome.status, "model_version": outcome.model_version,
        "gate_reason": outcome.gate_reason, "metrics": outcome.metrics,
        "mlflow_run_id": outcome.mlflow_run_id})
    t.save(cfg, state.model_copy(update={"months": [*state.months, record]}))
    return outcome


def _learn(params: RefreshParams, cfg: PitConfig, recipe: Recipe, state: RefreshState,
           info: DumpInfo, data_ref: str, ds: KnowledgeDataset) -> Outcome:
    """Train, score and register the month's version (or find it registered); then the gate."""
    logger = get_run_logger()
    tracker = tracker_for(cfg)
    registry = Registry(tracker.uri, params.registered_model)
    version = registry.find(info.date, ds.fingerprint)
    if version is None:
        version, champion, challenger = _train_and_register(
            params, cfg, recipe, state, info, data_ref, ds, registry)
    else:
        logger.info("version %s of %s was registered for dump %s by an earlier attempt",
                    version.version, params.registered_model, info.date)
        champion = t.score(cfg, version.tags[START_TAG], data_ref, "champion")
        challenger = t.score(cfg, version.tags[MODEL_KEY_TAG], data_ref, "challenger")
        run = tracker.client.get_run(version.run_id)
        if run.info.status != "FINISHED":
            tracker.end_run(version.run_id)
    tags = version.tags
    verdict = Verdict(tags["gate_verdict"] != "rejected", tags["gate_reason"])
    promotion = t.promote(tracker.uri, params.registered_model, version, verdict)
    number = str(version.version)
    metrics = {k: float(tags[k]) if tags.get(k) else None
               for k in FIGURES}
    logger.info("%s v%s for dump %s: %s (%s)", params.registered_model, number, info.date,
                promotion.status, promotion.reason)
    return Outcome(
        promotion.status, params.registered_model, dump_date=info.date, model_version=number,
        gate_reason=promotion.reason, metrics=metrics, mlflow_run_id=version.run_id,
        champion=champion, challenger=challenger,
        run_url=run_url(tracker.uri, tracker.experiment_id, version.run_id),
        version_url=version_url(tracker.uri, params.registered_model, number),
        changes=ds.meta.get("changes") or {})


def _start_model(cfg: PitConfig, registry: Registry, state: RefreshState,
                 data_ref: str) -> tuple[str, str | None]:
    """The model the month continues, and its version: `champion`, else the base model."""
    champion = registry.alias(CHAMPION)
    if champion is None:
        return tt.build_base(cfg, state.base_data or data_ref), None
    key = champion.tags.get(MODEL_KEY_TAG, "")
    if not key or store_for(cfg).cached(key) is None:
        raise DataError(
            f"champion (version {champion.version} of {registry.name}) names model {key!r}, "
            f"which is not published in the artifact store {store_for(cfg).url()}; point "
            "--artifact-root at the store the refresh ran with, or move `champion` to a version "
            "whose model is there")
    return key, str(champion.version)


def _train_and_register(params: RefreshParams, cfg: PitConfig, recipe: Recipe,
                        state: RefreshState, info: DumpInfo, data_ref: str, ds: KnowledgeDataset,
                        registry: Registry):
    """The month's MLflow run: stages, scores, figures at step = month; the version last."""
    month = len(state.months)
    start_ref, parent = _start_model(cfg, registry, state, data_ref)
    tracker = tracker_for(cfg)
    sweep(tracker)
    run_id = open_run(tracker, f"{info.date}", recipe_hash(cfg, recipe, 0, ds.fingerprint,
                                                           start_ref),
                      tags={"dump_date": info.date, "registered_model": registry.name,
                            "recipe": recipe.slug})
    with held(tracker, run_id):
        try:
            tracker.log_params(run_id, {
                "dump_date": info.date, "month_index": month, "recipe": recipe.slug,
                "stages": recipe.describe(), "start_model": model_url(cfg, start_ref),
                "champion_version": parent or "base", "dataset": data_ref,
                "dataset_fingerprint": ds.fingerprint, "min_gain": params.min_gain,
                "max_forgetting": params.max_forgetting, "replay": params.replay,
                "mirror": params.mirror, "category": params.category,
                "old_category": params.old_category, "train": cfg.train.model_dump(),
                "model": cfg.model.model_dump()})
            ref = start_ref
            for i in range(len(recipe.stages)):
                ref, _ = tt.run_stage(cfg, recipe, i, ref, data_ref, run_id, 0)
            champion = t.score(cfg, start_ref, data_ref, "champion")
            challenger = t.score(cfg, ref, data_ref, "challenger")
            figures = month_figures(champion, challenger)
            verdict = Gate(params.min_gain, params.max_forgetting).judge(
                figures["new_em_gain"], figures["forgetting"])
            tracker.log_metrics(run_id, {
                **{f"refresh/{k}": v for k, v in figures.items()},
                **{f"refresh/champion_{k}": v for k, v in champion.items() if "em" in k},
                **{f"refresh/challenger_{k}": v for k, v in challenger.items() if "em" in k},
                "refresh/promotable": float(verdict.passed)}, step=month, once=True)
            tags = version_tags(info.date, ds.fingerprint, figures, verdict, ref,
                                model_url(cfg, ref), start_ref, parent, month)
            version = t.register(cfg, tracker.uri, registry.name, run_id, ref, tags,
                                 f"{recipe.slug} on dump {info.date} from "
                                 f"{'version ' + parent if parent else 'the base model'}")
        except BaseException:
            tracker.end_run(run_id, "FAILED")
            raise
    tracker.end_run(run_id)
    return version, champion, challenger
