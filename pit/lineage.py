"""What a recipe's run read and made, as MLflow shows them: data set inputs and logged models.

The runs table's Dataset column lists a run's data set inputs: the data set
it trained on (context `training`, digest = pit's fingerprint) and the test
questions it was scored on (`evaluation`). Only descriptions go to MLflow;
the rows stay in the artifact store, at the `source` the input names.

Each stage's published model is an MLflow logged model (the Models tabs),
with the stage's settings as params, the store URLs of its weights and
checkpoints as tags, and its last metrics. Weights stay in the artifact store:
a billion-parameter model is not copied into MLflow. A logged model is one per
stage output (its `pit.keys` hash, tagged `pit.stage_hash`), like the output
itself: a stage reused by another recipe, a resumed comparison or a new one
links the model it finds to its run as an output instead of logging another.
Two comparisons that finish the same stage at the same moment may each log one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pit.artifacts import model_url, store_for
from pit.config import PitConfig
from pit.data.dataset import KnowledgeDataset
from pit.data.source import SYNTHETIC
from pit.data.views import eval_questions
from pit.keys import stage_output
from pit.recipe import Recipe
from pit.tracking import TrackedDataset, Tracker
from pit.train.runner import stage_offset

STAGE_HASH_TAG = "pit.stage_hash"
MODEL_TYPE = "pit-stage"


def dataset_name(cfg: PitConfig, data_ref: str) -> str:
    """What users call the data set: the synthetic world by its seed, else its folder's name."""
    if cfg.data.source == SYNTHETIC:
        return f"synthetic-world-seed-{cfg.world.seed}"
    return Path(data_ref.rstrip("/")).name or data_ref


def dataset_url(cfg: PitConfig, data_ref: str) -> str:
    """Where the data set is published: its URL or folder, or its key in the artifact store."""
    if data_ref.startswith("s3://") or Path(data_ref).is_absolute():
        return data_ref
    return store_for(cfg).url(data_ref)


def tracked_datasets(cfg: PitConfig, data_ref: str, ds: KnowledgeDataset
                     ) -> list[TrackedDataset]:
    """The data set a comparison trains on, and the test questions it is scored on."""
    name, source = dataset_name(cfg, data_ref), dataset_url(cfg, data_ref)
    questions = eval_questions(ds, cfg.data)
    rows = "\n".join(json.dumps(q, sort_keys=True, ensure_ascii=False) for q in questions)
    return [
        TrackedDataset(name=name, digest=ds.fingerprint, source=source, context="training",
                       profile=ds.stats()),
        TrackedDataset(name=f"{name}-test-qa", digest=hashlib.sha256(rows.encode()).hexdigest()
                       [:16], source=source, context="evaluation",
                       profile={"questions": len(questions), "split": "test",
                                "domain": cfg.data.test_domain, "of": ds.fingerprint}),
    ]


def log_stage_model(tracker: Tracker, run_id: str, cfg: PitConfig, recipe: Recipe, index: int,
                    seed: int, model_ref: str, datasets: list[TrackedDataset],
                    metrics: dict[str, float]) -> str:
    """Stage `index` of `recipe`, trained from `model_ref`, as a logged model of run `run_id`.

    `datasets` are the run's inputs (`tracked_datasets`); the training one's
    digest is the fingerprint the stage's output is keyed by. Returns the
    model's id. Found again by the stage's hash, the model keeps the metrics of
    the run that logged it first; each run that uses it gets it as an output.
    """
    stage = recipe.stages[index]
    dataset = next(d for d in datasets if d.context == "training")
    out = stage_output(cfg, stage, index, model_ref, dataset.digest, seed)
    first, last = (stage_offset(recipe, i, cfg.train) for i in (index, index + 1))
    model = tracker.find_model(STAGE_HASH_TAG, out.hash)
    if model is None:
        store = store_for(cfg)
        model = tracker.create_model(
            f"{recipe.slug}-stage{index}-seed{seed}", run_id,
            tags={STAGE_HASH_TAG: out.hash, "pit.model": store.url(out.key),
                  "pit.checkpoints": store.url(out.checkpoints), "pit.stage_key": out.key,
                  "pit.trained_for": recipe.slug},
            params={"recipe": recipe.slug, "stage": index, "seed": cfg.train.seed + seed,
                    "epochs": stage.resolved_epochs(cfg.train), "from_model":
                    model_url(cfg, model_ref), "dataset_fingerprint": dataset.digest,
                    **stage.model_dump(exclude={"epochs"})},
            model_type=MODEL_TYPE)
    if not model.metrics:
        tracker.link_model_metrics(run_id, model.model_id, sorted(metrics), (first, last),
                                   dataset)
    tracker.finish_model(model)
    tracker.link_output(run_id, model.model_id, last)
    return model.model_id
