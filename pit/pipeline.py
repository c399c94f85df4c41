"""The steps of a comparison, as plain functions from config and keys to keys and metrics.

Each step reads its inputs from the artifact store and publishes its output
there under a key that carries a hash of everything it depends on (marin's
executor idea): the same config gives the same key, a finished output is
reused, and every recipe starts from the very same base model. Prefect tasks
in `tasks/` wrap these functions one to one and add retries, nothing else.
"""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path
from typing import Any

import torch

from pit.config import PitConfig, TrainConfig
from pit.data.dataset import KnowledgeDataset
from pit.data.world import build_world, retention_questions
from pit.eval.evaluator import Evaluator
from pit.modeling import build_embedded_model, load_model, save_model, train_tokenizer
from pit.progress import bar
from pit.recipe import Recipe, Source, Stage
from pit.storage import StorageConfig, Store, fingerprint
from pit.tracking import Tracker, tracking_uri
from pit.train.batches import epoch_batches, stage_examples
from pit.train.examples import Example, ExampleBuilder
from pit.train.loop import Callback, StageState, train_stage

log = logging.getLogger(__name__)

# Fields that name where things go or how they are shown, not what is computed.
_NOT_IN_HASH = ("preset", "workdir", "artifact_root", "methods", "seeds", "tracking")


def store_for(cfg: PitConfig) -> Store:
    return Store(StorageConfig(root=cfg.artifact_root or str(Path(cfg.workdir) / "artifacts")))


def local_path(cfg: PitConfig, key: str) -> Path:
    """A local folder holding the published output `key` (downloaded once if remote)."""
    store = store_for(cfg)
    if store.is_local:
        return Path(store.url(key))
    cache = Path(cfg.workdir) / "cache" / key
    if (cache / ".complete").exists():
        return cache
    tmp = cache.with_name(cache.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    store.get_dir(key, tmp)
    (tmp / ".complete").touch()
    shutil.rmtree(cache, ignore_errors=True)
    tmp.rename(cache)
    return cache


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# -- data ------------------------------------------------------------------------------------


def dataset_key(cfg: PitConfig) -> str:
    return f"datasets/world-{fingerprint(cfg.world)[:16]}"


def build_dataset(cfg: PitConfig) -> str:
    """Build (or reuse) the synthetic world of `cfg.world`; return its key in the store."""
    store = store_for(cfg)
    key = dataset_key(cfg)
    if store.cached(key) is None:
        ds = build_world(cfg.world)
        with store.staging(key, {"kind": "dataset", "fingerprint": ds.fingerprint}) as folder:
            ds.save(folder)
    return key


def load_dataset(cfg: PitConfig, key: str) -> KnowledgeDataset:
    return KnowledgeDataset.load(local_path(cfg, key))


# -- base model ------------------------------------------------------------------------------


def _base_examples(ds: KnowledgeDataset, builder: ExampleBuilder) -> list[Example]:
    """The base model's world: old documents, old QA, and reading comprehension on old docs.

    The QA pairs teach the answer format a pretrained LLM already has; the
    document-then-question examples give it the skill the open-book setting
    measures. None of it mentions a train or test film.
    """
    old_docs = ds.docs_where("old")
    examples = [builder.document(d["text"]) for d in old_docs]
    old_qa = ds.qa_where("old")
    examples += [builder.qa(q["question"], q["answers"][0]) for q in old_qa]
    first_doc = {d["entity_id"]: d for d in old_docs if d["doc_id"].endswith("-p0")}
    for q in old_qa[::2]:
        d = first_doc.get(q["entity_id"])
        if d is not None:
            examples.append(builder.open_book(d["text"], q["question"], q["answers"][0]))
    return examples


def base_key(cfg: PitConfig, data_key: str) -> str:
    h = fingerprint({"model": cfg.model, "base": cfg.base, "data": data_key})
    return f"models/base-{h[:16]}"


def build_base(cfg: PitConfig, data_key: str) -> str:
    """Pre-train (or reuse) the base model; return a key, or the external model reference."""
    if cfg.model.name_or_path != "embedded":
        return cfg.model.name_or_path
    store = store_for(cfg)
    key = base_key(cfg, data_key)
    if store.cached(key) is not None:
        return key
    ds = load_dataset(cfg, data_key)
    texts = [d["text"] for d in ds.docs] + [
        f"Question: {q['question']} Answer: {q['answers'][0]}" for q in ds.qa
    ]
    tokenizer = train_tokenizer(texts, cfg.model.vocab_size)
    model = build_embedded_model(cfg.model, tokenizer, seed=cfg.base.seed)
    builder = ExampleBuilder(tokenizer, cfg.model.max_seq_len)
    examples = _base_examples(ds, builder)
    tcfg = TrainConfig(doc_lr=cfg.base.lr, qa_lr=cfg.base.lr, doc_batch_size=cfg.base.batch_size,
                       qa_batch_size=cfg.base.batch_size, seed=cfg.base.seed)
    stage = Stage(sources=[Source(name="old_docs"), Source(name="old_qa")], epochs=cfg.base.epochs)
    epochs = [epoch_batches(examples, stage, tcfg, cfg.base.seed * 1000 + e)
              for e in range(cfg.base.epochs)]
    accelerator = _accelerator()
    torch.manual_seed(cfg.base.seed)
    model, optimizer = _prepare(accelerator, model, tcfg)
    with bar(sum(len(e) for e in epochs), "pre-training base model") as advance:
        state = train_stage(model, epochs, tcfg, {"doc": cfg.base.lr, "qa": cfg.base.lr},
                            tokenizer.pad_token_id, accelerator, optimizer, progress=advance)
    del state
    with store.staging(key, {"kind": "base-model", "dataset": data_key}) as folder:
        save_model(accelerator.unwrap_model(model), tokenizer, folder)
    return key


def model_path(cfg: PitConfig, ref: str) -> str:
    """Where `from_pretrained` finds a model reference: a published key or an external id."""
    if ref.startswith(("models/", "runs/")):
        return str(local_path(cfg, ref))
    return ref


def _accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available())


def _prepare(accelerator, model, tcfg: TrainConfig):
    from pit.train.loop import make_optimizer

    optimizer = make_optimizer(model, tcfg)
    return accelerator.prepare(model, optimizer)


# -- recipe stages ---------------------------------------------------------------------------


def stage_offset(recipe: Recipe, index: int, train: TrainConfig) -> int:
    """Epochs before stage `index`: per-epoch metric steps run on across stages."""
    return sum(s.resolved_epochs(train) for s in recipe.stages[:index])


def _train_cfg(cfg: PitConfig, seed: int) -> TrainConfig:
    return cfg.train.model_copy(update={"seed": cfg.train.seed + seed})


class EpochEvaluation(Callback):
    """Evaluates at the end of each epoch of a stage that reads the test documents."""

    def __init__(self, fn, offset: int) -> None:
        self.fn = fn
        self.offset = offset
        self.last: dict[str, float] = {}

    def on_epoch_end(self, state: StageState, metrics: dict[str, float]) -> None:
        self.last = self.fn(self.offset + state.position.epoch, metrics)


def run_stage(
    cfg: PitConfig, recipe: Recipe, index: int, model_ref: str, data_key: str,
    run_id: str | None, seed: int = 0,
) -> tuple[str, dict[str, float]]:
    """Train one stage of a recipe from `model_ref`; publish the model; return its key."""
    stage = recipe.stages[index]
    tcfg = _train_cfg(cfg, seed)
    store = store_for(cfg)
    key = f"runs/{run_id or 'local'}/{recipe.slug}-s{seed}/stage-{index}"
    ds = load_dataset(cfg, data_key)
    model, tokenizer = load_model(model_path(cfg, model_ref), cfg.model)
    builder = ExampleBuilder(tokenizer, cfg.model.max_seq_len)
    retention = retention_questions(ds, cfg.world.retention_questions)
    examples = stage_examples(ds, stage, builder, tcfg, exclude_qa={q["qa_id"] for q in retention})
    n_epochs = stage.resolved_epochs(tcfg)
    base_seed = tcfg.seed * 1_000_003 + index * 1009
    epochs = [epoch_batches(examples, stage, tcfg, base_seed + e) for e in range(n_epochs)]
    peak = {"doc": stage.doc_lr or tcfg.doc_lr, "qa": stage.qa_lr or tcfg.qa_lr}

    tracker = _tracker(cfg) if run_id else None
    offset = stage_offset(recipe, index, tcfg)
    accelerator = _accelerator()
    torch.manual_seed(tcfg.seed * 7919 + index)
    model, optimizer = _prepare(accelerator, model, tcfg)

    def on_epoch(step: int, losses: dict[str, float]) -> dict[str, float]:
        metrics = {f"loss_{k[5:]}" if k.startswith("loss_") else k: v for k, v in losses.items()}
        if stage.reads_test_docs and cfg.eval.eval_every_epoch:
            metrics |= evaluate_trained(cfg, accelerator.unwrap_model(model), tokenizer, ds,
                                        retention)[0]
        if tracker:
            tracker.log_metrics(run_id, metrics, step=step)
        return metrics

    evaluation = EpochEvaluation(on_epoch, offset)
    with bar(sum(len(e) for e in epochs), f"{recipe.slug} stage {index + 1}") as advance:
        train_stage(model, epochs, tcfg, peak, tokenizer.pad_token_id, accelerator, optimizer,
                    callbacks=[evaluation], progress=advance)
    with store.staging(key, {"kind": "stage-model", "recipe": recipe.slug, "stage": index,
                             "seed": seed, "metrics": evaluation.last}) as folder:
        save_model(accelerator.unwrap_model(model), tokenizer, folder)
    return key, evaluation.last


# -- evaluation ------------------------------------------------------------------------------


def evaluate_trained(cfg: PitConfig, model, tokenizer, ds: KnowledgeDataset,
                     retention: list[dict], mode: str = "zero-shot",
                     ) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Test QA (in `mode`), test-document perplexity and retention on old questions."""
    ev = Evaluator(model, tokenizer, cfg.eval, cfg.model.max_seq_len)
    test_qa = ds.qa_where("test", "films")
    docs_by_id = {d["doc_id"]: d for d in ds.docs}
    demos = ds.qa_where("train", "films")
    with bar(len(test_qa), f"answering ({mode})") as advance:
        metrics, rows = ev.answer(test_qa, mode, docs_by_id, demos, progress=advance)
    metrics["test_doc_ppl"] = ev.perplexity([d["text"] for d in ds.docs_where("test", "films")])
    if retention:
        metrics["retention_em"] = ev.answer(retention, "zero-shot")[0]["exact_match"]
    return metrics, rows


def evaluate(
    cfg: PitConfig, recipe: Recipe, model_ref: str, data_key: str, run_id: str | None,
    retention_before: float | None, step: int = 0,
) -> dict[str, Any]:
    """Final metrics of a recipe's model: logged to its run, predictions as a table."""
    ds = load_dataset(cfg, data_key)
    model, tokenizer = load_model(model_path(cfg, model_ref), cfg.model, device=_device())
    retention = retention_questions(ds, cfg.world.retention_questions)
    metrics, rows = evaluate_trained(cfg, model, tokenizer, ds, retention, recipe.evaluation)
    if retention_before is not None and "retention_em" in metrics:
        metrics["forgetting"] = retention_before - metrics["retention_em"]
    if run_id:
        tracker = _tracker(cfg)
        tracker.log_metrics(run_id, metrics, step=step, once=True)
        tracker.log_table(run_id, rows, "predictions.json")
    return {"metrics": metrics, "predictions": rows}


def base_retention(cfg: PitConfig, model_ref: str, data_key: str) -> float | None:
    """Exact match of the untouched base model on the retention questions."""
    ds = load_dataset(cfg, data_key)
    retention = retention_questions(ds, cfg.world.retention_questions)
    if not retention:
        return None
    model, tokenizer = load_model(model_path(cfg, model_ref), cfg.model, device=_device())
    ev = Evaluator(model, tokenizer, cfg.eval, cfg.model.max_seq_len)
    return ev.answer(retention, "zero-shot")[0]["exact_match"]


def _tracker(cfg: PitConfig) -> Tracker:
    return Tracker(tracking_uri(cfg.tracking.tracking_uri, cfg.workdir), cfg.tracking.experiment)


def seeded(seed: int) -> random.Random:
    return random.Random(seed)
