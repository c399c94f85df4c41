"""The comparison flows: `compare_methods` (the paper's table) and `run_recipe` (one recipe).

Flow parameters are pydantic models, so the Prefect UI renders them as a form.
MLflow runs are created here, before any task, and their ids handed to the
tasks: a retried task keeps writing to the same run. A comparison started
again after its process died finds its runs again by content hash
(`pit.runs`) and continues them.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from flows.fanout import RecipeJob, portable_config, run_jobs
from pit.artifacts import model_url
from pit.config import PitConfig
from pit.config_sources import load_config, preset_names, string_override
from pit.data.checks import check_dataset
from pit.data.dataset import KnowledgeDataset
from pit.data.source import SYNTHETIC, load_dataset
from pit.data.views import demonstrations, eval_questions
from pit.errors import ConfigError
from pit.eval.chance import chance_exact_match
from pit.eval.ordering import judge
from pit.lineage import log_stage_model, tracked_datasets
from pit.modeling import check_model
from pit.plots import close
from pit.recipe import Recipe, all_recipes, select_recipes
from pit.report import aggregate, comparison_rows, figures, results_document
from pit.runs import comparison_hash, held, open_run, recipe_hash, sweep
from pit.tracking import TrackedDataset, Tracker, tracker_for
from pit.train.runner import stage_offset
from pit.train.stages import stage_curve
from tasks import training as t

PresetName = Literal[tuple(preset_names())]  # type: ignore[valid-type]
RecipeChoice = Literal[tuple([*(r.slug for r in select_recipes(["all"])), "all", "main"])]  # type: ignore[valid-type]


class CompareParams(BaseModel):
    """What a user picks when starting a comparison from the CLI or the Prefect UI.

    Closed choices (presets, shipped recipes) are enumerations, so the UI's
    form offers them as drop-downs; recipes of a user's own folder go in
    `user_methods`.
    """

    preset: PresetName | None = Field(  # type: ignore[valid-type]
        "smoke", description="Shipped preset: smoke (seconds, for checks) or demo (the paper's "
        "table on a laptop). Ignored when config_file is set.")
    config_file: str | None = Field(None, description="A YAML config instead of a preset.")
    methods: list[RecipeChoice] | None = Field(  # type: ignore[valid-type]
        None, description="Recipes to compare ('all' for every recipe, 'main' for the paper's "
        "main table); default: the preset's."
    )
    user_methods: list[str] = Field(
        default_factory=list, description="Slugs of your own recipes, defined in recipes_dirs."
    )
    seeds: int | None = Field(None, ge=1, description="Seeds per recipe; default: the preset's.")
    overrides: list[str] = Field(
        default_factory=list, description="section.field=value overrides, as with --set, "
        "e.g. train.doc_lr=5e-4."
    )
    data: str | None = Field(
        None, description="Data set to train on: 'synthetic', or a folder, s3:// URL or store "
        "key published by `pit data synth` / `pit data wiki`; default: the preset's."
    )
    model: str | None = Field(
        None, description="Model to start from: 'embedded', a Hugging Face id, a folder, a "
        ".gguf file or an s3:// URI; default: the preset's."
    )
    artifact_root: str | None = Field(None, description="A folder or s3://bucket/prefix.")
    recipes_dirs: list[str] = Field(default_factory=list, description="Folders of user recipes.")
    parallel: bool = Field(
        False, description="Run each recipe and seed as a flow run of the run-recipe "
        "deployment, so that several workers train them at once (needs `pit deploy`)."
    )

    @classmethod
    def from_slugs(cls, slugs: list[str] | None, **fields: Any) -> CompareParams:
        """Shipped slugs into `methods`, any other into `user_methods`."""
        preset = fields.get("preset")
        if preset is not None and preset not in get_args(PresetName):
            raise ConfigError(f"unknown preset {preset!r}; shipped presets: "
                              f"{', '.join(get_args(PresetName))}. Or pass --config FILE.",
                              source="--preset")
        if slugs is None:
            return cls(**fields)
        shipped = set(get_args(RecipeChoice))
        return cls(methods=[s for s in slugs if s in shipped],
                   user_methods=[s for s in slugs if s not in shipped], **fields)

    def config(self) -> PitConfig:
        extra = list(self.overrides)
        if self.artifact_root:
            extra.append(string_override("storage.root", self.artifact_root))
        if self.data:
            extra.append(string_override("data.source", self.data))
        if self.model:
            extra.append(string_override("model.name_or_path", self.model))
        cfg = load_config(None if self.config_file else self.preset, self.config_file, extra)
        updates: dict[str, Any] = {}
        if self.methods or self.user_methods:
            updates["methods"] = [*(self.methods or []), *self.user_methods]
        if self.seeds:
            updates["seeds"] = self.seeds
        return cfg.model_copy(update=updates)


def metric_name(slug: str) -> str:
    """MLflow metric names allow no '+': pit++ is logged as pit_plus_plus."""
    return slug.replace("+", "_plus")



def _recipe_params(recipe: Recipe, cfg: PitConfig, seed: int) -> dict[str, Any]:
    params = {
        "recipe": recipe.slug,
        "stages": recipe.describe(),
        "evaluation": recipe.evaluation,
        "seed": cfg.train.seed + seed,
        "train": cfg.train.model_dump(),
        "model": cfg.model.model_dump(),
        "data": cfg.data.model_dump(),
    }
    if cfg.data.source == SYNTHETIC:
        params["world"] = cfg.world.model_dump()
    return params


@flow(name="run-recipe", flow_run_name="{recipe.slug}-seed-{seed}")
def run_recipe_stages(cfg: PitConfig, recipe: Recipe, seed: int, data_ref: str, base_ref: str,
                      retention_before: float | None, parent_run_id: str | None,
                      dataset_fingerprint: str = "",
                      datasets: list[TrackedDataset] | None = None) -> dict[str, Any]:
    """One recipe and seed: a nested MLflow run, its stages, then the final evaluation."""
    tracker = tracker_for(cfg)
    datasets = datasets or tracked_datasets(cfg, data_ref, load_dataset(cfg, data_ref))
    run_id = open_run(tracker, f"{recipe.slug}-seed{seed}",
                      recipe_hash(cfg, recipe, seed, dataset_fingerprint, base_ref),
                      parent_id=parent_run_id, tags={"recipe": recipe.slug, "seed": str(seed)})
    with held(tracker, run_id):
        tracker.log_params(run_id, {**_recipe_params(recipe, cfg, seed), "base_model": base_ref,
                                    "dataset": data_ref,
                                    "dataset_fingerprint": dataset_fingerprint})
        tracker.log_datasets(run_id, datasets)
        try:
            ref, keys = base_ref, []
            for i in range(len(recipe.stages)):
                start = ref
                ref, metrics = t.run_stage(cfg, recipe, i, start, data_ref, run_id, seed)
                log_stage_model(tracker, run_id, cfg, recipe, i, seed, start, datasets, metrics)
                keys.append(ref)
            total = stage_offset(recipe, len(recipe.stages), cfg.train)
            final = t.evaluate(cfg, recipe, ref, data_ref, run_id, retention_before, total,
                               seed)
            tracker.set_tags(run_id, {"final_model": model_url(cfg, ref)})
        except BaseException:
            tracker.end_run(run_id, "FAILED")
            raise
    tracker.end_run(run_id)
    return {"seed": seed, "run_id": run_id, "metrics": final["metrics"],
            "per_question": final["per_question"], "curve": stage_curve(cfg, recipe, keys, seed)}


@flow(name="compare-methods", flow_run_name="compare-{params.preset}")
def compare_methods(params: CompareParams = CompareParams()) -> dict[str, Any]:
    """The paper's comparison: a data set, a base model, every chosen recipe, one table."""
    cfg = params.config()
    return compare(cfg, params.recipes_dirs, parallel=params.parallel)


def compare(cfg: PitConfig, recipes_dirs: list[str] | None = None,
            parallel: bool = False) -> dict[str, Any]:
    """Data set, checked against the recipes before anything trains; base model; recipes.

    A comparison run again after its process died continues its MLflow runs
    (`pit.runs`) and, through content-keyed outputs, its unfinished stage.
    """
    recipes = select_recipes(cfg.methods, recipes_dirs)
    check_model(cfg.model)
    data_ref = t.build_dataset(cfg)
    ds = load_dataset(cfg, data_ref)
    check_dataset(ds, cfg, recipes)
    dataset = {"key": data_ref, **ds.stats()}
    tracker = tracker_for(cfg)
    sweep(tracker)
    parent = open_run(tracker, f"compare-{cfg.preset}",
                      comparison_hash(cfg, recipes, ds.fingerprint), tags={"preset": cfg.preset})
    with held(tracker, parent):
        try:
            methods, retention_before, noise = _compare_in(cfg, recipes, recipes_dirs, ds,
                                                           data_ref, tracker, parent, parallel)
        except BaseException:
            tracker.end_run(parent, "FAILED")
            raise
        sweep(tracker)
    tracker.end_run(parent)
    return {**results_document(cfg.preset, cfg.model.name_or_path, dataset, methods, parent),
            "base_retention_em": retention_before, **noise}


def _compare_in(cfg: PitConfig, recipes: list[Recipe], recipes_dirs: list[str] | None,
                ds: KnowledgeDataset, data_ref: str, tracker: Tracker, parent: str,
                parallel: bool = False
                ) -> tuple[dict[str, dict[str, Any]], float | None, dict[str, Any]]:
    """Base model, every recipe and seed, the table and figures: all into run `parent`."""
    logger = get_run_logger()
    if url := tracker.experiment_url():
        logger.info("MLflow: %s", url)
    tracker.log_params(parent, {"preset": cfg.preset, "methods": [r.slug for r in recipes],
                                "seeds": cfg.seeds, "model": cfg.model.name_or_path,
                                "dataset": data_ref, "dataset_fingerprint": ds.fingerprint})
    datasets = tracked_datasets(cfg, data_ref, ds)
    tracker.log_datasets(parent, datasets)
    base_ref = t.build_base(cfg, data_ref)
    retention_before = t.base_retention(cfg, base_ref, data_ref)
    if retention_before is not None:
        tracker.log_metrics(parent, {"base_retention_em": retention_before}, once=True)
    logger.info("base model %s, retention EM before training %s", base_ref, retention_before)
    if parallel:
        config = portable_config(cfg)
        jobs = [RecipeJob(config=config, recipe=r.model_dump(mode="json"),
                          seed=s, data_ref=data_ref, base_ref=base_ref,
                          retention_before=retention_before, parent_run_id=parent,
                          dataset_fingerprint=ds.fingerprint)
                for r in recipes for s in range(cfg.seeds)]
        done = iter(run_jobs(jobs))
        runs = {r.slug: [next(done) for _ in range(cfg.seeds)] for r in recipes}
    else:
        runs = {r.slug: [run_recipe_stages(cfg, r, s, data_ref, base_ref, retention_before,
                                           parent, ds.fingerprint, datasets)
                         for s in range(cfg.seeds)]
                for r in recipes}
    methods: dict[str, dict[str, Any]] = {}
    for slug, per_seed in runs.items():
        methods[slug] = aggregate(per_seed)
        logger.info("%s: EM %.1f", slug, methods[slug]["exact_match"])
    known = all_recipes(recipes_dirs)
    noise = {"chance_exact_match": chance_exact_match(eval_questions(ds, cfg.data),
                                                      demonstrations(ds, cfg.data)),
             "test_questions": len(eval_questions(ds, cfg.data)),
             "gaps": [g.as_dict() for g in judge(methods)]}
    tracker.log_metrics(parent, {"chance_exact_match": noise["chance_exact_match"]}, once=True)
    tracker.log_table(parent, comparison_rows(methods, known), "comparison.json")
    tracker.log_dict(parent, noise["gaps"], "gaps.json")
    for name, fig in figures(methods, known, retention_before).items():
        tracker.log_figure(parent, fig, name)
        close(fig)
    for slug, res in methods.items():
        tracker.log_metrics(parent, {f"{metric_name(slug)}/{m}": res[m] for m in
                                     ("exact_match", "answer_recall", "rouge_l")
                                     if res.get(m) is not None}, once=True)
    return methods, retention_before, noise


class RecipeParams(BaseModel):
    """One recipe, for trying a new recipe file without the whole table."""

    recipe: str = Field(..., description="Recipe slug, e.g. pit++.")
    preset: str | None = "smoke"
    config_file: str | None = None
    seeds: int = Field(1, ge=1)
    data: str | None = Field(None, description="As in CompareParams.")
    model: str | None = Field(None, description="As in CompareParams.")
    overrides: list[str] = Field(default_factory=list)
    recipes_dirs: list[str] = Field(default_factory=list)


@flow(name="run-recipe-standalone", flow_run_name="{params.recipe}")
def run_recipe(params: RecipeParams) -> dict[str, Any]:
    cfg = CompareParams(preset=params.preset, config_file=params.config_file,
                        methods=[params.recipe], seeds=params.seeds, data=params.data,
                        model=params.model, overrides=params.overrides).config()
    return compare(cfg, params.recipes_dirs)
