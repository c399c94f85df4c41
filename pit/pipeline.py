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

from pit.config import PitConfig, TrainConfig, WorldConfig
from pit.data.dataset import KnowledgeDataset
from pit.data.world import build_world, reading_passages, retention_questions
from pit.eval.evaluator import Evaluator
from pit.modeling import build_embedded_model, load_model, save_model, train_tokenizer
from pit.progress import bar
from pit.recipe import Recipe, Source, Stage
from pit.storage import StorageConfig, Store, fingerprint
from pit.tracking import tracker_for
from pit.train.batches import epoch_batches, stage_examples
from pit.train.checkpoint import Checkpointer, fetch_latest, read_checkpoint, step_of
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


def _base_examples(ds: KnowledgeDataset, builder: ExampleBuilder, held_out: set[str],
                   seed: int = 0) -> list[Example]:
    """One epoch of the base model's world: old documents, old QA, reading comprehension.

    The QA pairs teach the answer format a pretrained LLM already has. The reading
    examples teach the skill the open-book setting measures; on a synthetic world
    they are about films drawn afresh each epoch, which no memory can answer, so
    only reading the context gives the answer. Held-out (retention) questions are
    never trained on.
    """
    rng = random.Random(seed)
    old_docs = ds.docs_where("old")
    examples = [builder.document(d["text"]) for d in old_docs]
    old_qa = [q for q in ds.qa_where("old") if q["qa_id"] not in held_out]
    examples += [builder.qa(q["question"], q["answers"][0]) for q in old_qa]
    n_entities = len({d["entity_id"] for d in old_docs})
    if ds.meta.get("kind") == "synthetic":
        world = WorldConfig.model_validate(ds.meta["world"])
        passages = reading_passages(world, n_entities, seed)
    else:
        docs_of = {d["entity_id"]: d for d in old_docs}
        passages = [(docs_of[q["entity_id"]]["text"], q["question"], q["answers"][0])
                    for q in rng.sample(old_qa, min(n_entities, len(old_qa)))
                    if q["entity_id"] in docs_of]
    examples += [builder.open_book(text, q, a) for text, q, a in passages]
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
    texts = [d["text"] for d in ds.docs_where("old")] + [
        f"Question: {q['question']} Answer: {q['answers'][0]}" for q in ds.qa_where("old")
    ]
    tokenizer = train_tokenizer(texts, cfg.model.vocab_size)
    model = build_embedded_model(cfg.model, tokenizer, seed=cfg.base.seed)
    builder = ExampleBuilder(tokenizer, cfg.model.max_seq_len)
    held_out = {q["qa_id"] for q in retention_questions(ds, cfg.world.retention_questions)}

    tcfg = TrainConfig(doc_lr=cfg.base.lr, qa_lr=cfg.base.lr, doc_batch_size=cfg.base.batch_size,
                       qa_batch_size=cfg.base.batch_size, seed=cfg.base.seed)
    stage = Stage(sources=[Source(name="old_docs"), Source(name="old_qa")], epochs=cfg.base.epochs)
    epochs = [epoch_batches(_base_examples(ds, builder, held_out, cfg.base.seed * 1000 + e),
                            stage, tcfg, cfg.base.seed * 1000 + e)
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


def is_store_key(ref: str) -> bool:
    """Whether a model reference is an output of this store rather than an external id."""
    return ref.startswith(("models/", "runs/"))


def model_path(cfg: PitConfig, ref: str) -> str:
    """Where `from_pretrained` finds a model reference: a published key or an external id."""
    return str(local_path(cfg, ref)) if is_store_key(ref) else ref


def model_url(cfg: PitConfig, ref: str) -> str:
    """A model reference as users paste it: the store URL of a key, else the id itself."""
    return store_for(cfg).url(ref) if is_store_key(ref) else ref


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
    """Evaluates at the end of each epoch and records the metrics by epoch number.

    `history` maps the stage's 1-based epoch to that epoch's metrics; a
    checkpoint carries it, so a resumed stage knows every epoch's numbers
    without recomputing them.
    """

    def __init__(self, fn, offset: int, history: dict[int, dict[str, float]] | None = None
                 ) -> None:
        self.fn = fn
        self.offset = offset
        self.history = {} if history is None else history

    @property
    def last(self) -> dict[str, float]:
        return self.history[max(self.history)] if self.history else {}

    def on_epoch_end(self, state: StageState, metrics: dict[str, float]) -> None:
        epoch = state.position.epoch
        self.history[epoch] = self.fn(self.offset + epoch, metrics)


def stage_key(recipe: Recipe, index: int, run_id: str | None, seed: int) -> str:
    """Where a stage's final model is published."""
    return f"runs/{run_id or 'local'}/{recipe.slug}-s{seed}/stage-{index}"


# Fields that change how a stage runs or is saved, never what it computes.
_NOT_IN_STAGE_HASH = tuple(f"config.{f}" for f in _NOT_IN_HASH) + (
    "config.train.launcher", "config.train.num_processes", "config.checkpoint",
)


def stage_fingerprint(cfg: PitConfig, recipe: Recipe, index: int, model_ref: str,
                      data_key: str, seed: int) -> str:
    """Hash of everything a stage's weights and metrics depend on."""
    return fingerprint(
        {"config": cfg, "recipe": recipe, "index": index, "seed": seed},
        exclude=_NOT_IN_STAGE_HASH, inputs={"model": model_ref, "data": data_key},
    )


def checkpoint_prefix(recipe: Recipe, index: int, run_id: str | None, seed: int,
                      stage_hash: str) -> str:
    """Where a stage's checkpoints go: beside its final model, named by the stage's hash."""
    return (f"runs/{run_id or 'local'}/{recipe.slug}-s{seed}/checkpoints/"
            f"stage-{index}-{stage_hash[:12]}")


def run_stage(
    cfg: PitConfig, recipe: Recipe, index: int, model_ref: str, data_key: str,
    run_id: str | None, seed: int = 0,
) -> tuple[str, dict[str, float]]:
    """Train one stage of a recipe from `model_ref`; publish the model; return its key and metrics.

    With `train.launcher=process` (the default) the training runs in its own
    process through `accelerate launch`, so an out-of-memory kill or a lost
    worker fails this call cleanly and calling it again (a Prefect retry)
    resumes from the newest checkpoint. A stage whose final model is already
    published with the same fingerprint is not trained again.
    """
    store = store_for(cfg)
    key = stage_key(recipe, index, run_id, seed)
    done = store.cached(key)
    stage_hash = stage_fingerprint(cfg, recipe, index, model_ref, data_key, seed)
    if done is not None and done.get("fingerprint") == stage_hash:
        log.info("stage %d of %s already published at %s; reusing it", index, recipe.slug,
                 store.url(key))
        return key, dict(done.get("metrics") or {})
    if cfg.train.launcher == "inline":
        return train_stage_job(cfg, recipe, index, model_ref, data_key, run_id, seed)
    from pit.train.launch import StageJob, launch_stage

    return launch_stage(StageJob(config=cfg, recipe=recipe, index=index, model_ref=model_ref,
                                 data_key=data_key, run_id=run_id, seed=seed))


def train_stage_job(
    cfg: PitConfig, recipe: Recipe, index: int, model_ref: str, data_key: str,
    run_id: str | None, seed: int = 0,
) -> tuple[str, dict[str, float]]:
    """The training of one stage, in this process (or in each process accelerate started).

    Resumes from the newest intact checkpoint of this very stage if there is
    one; logs per-epoch metrics to the MLflow run `run_id` only for epochs
    that run has not logged yet, so a retry never duplicates a step.
    """
    stage = recipe.stages[index]
    tcfg = _train_cfg(cfg, seed)
    store = store_for(cfg)
    key = stage_key(recipe, index, run_id, seed)
    stage_hash = stage_fingerprint(cfg, recipe, index, model_ref, data_key, seed)
    prefix = checkpoint_prefix(recipe, index, run_id, seed, stage_hash)
    accelerator = _accelerator()
    with accelerator.main_process_first():
        ds = load_dataset(cfg, data_key)
        model, tokenizer = load_model(model_path(cfg, model_ref), cfg.model)
    builder = ExampleBuilder(tokenizer, cfg.model.max_seq_len)
    retention = retention_questions(ds, cfg.world.retention_questions)
    examples = stage_examples(ds, stage, builder, tcfg, exclude_qa={q["qa_id"] for q in retention})
    n_epochs = stage.resolved_epochs(tcfg)
    base_seed = tcfg.seed * 1_000_003 + index * 1009
    epochs = [epoch_batches(examples, stage, tcfg, base_seed + e) for e in range(n_epochs)]
    peak = {"doc": stage.doc_lr or tcfg.doc_lr, "qa": stage.qa_lr or tcfg.qa_lr}

    tracker = tracker_for(cfg) if run_id and accelerator.is_main_process else None
    offset = stage_offset(recipe, index, tcfg)
    torch.manual_seed(tcfg.seed * 7919 + index)
    model, optimizer = _prepare(accelerator, model, tcfg)

    state, history = StageState(), {}
    if cfg.checkpoint.enabled:
        resumed = _resume(cfg, store, prefix, stage_hash, accelerator, model, optimizer)
        if resumed is not None:
            state, history = resumed
            log.info("%s stage %d resumes after step %d (epoch %d, batch %d)", recipe.slug,
                     index, state.position.step, state.position.epoch, state.position.batch)

    def log_epoch(step: int, metrics: dict[str, float]) -> None:
        assert tracker is not None and run_id is not None
        tracker.log_metrics(run_id, metrics, step=step, once=True)

    def on_epoch(step: int, losses: dict[str, float]) -> dict[str, float]:
        metrics = {f"loss_{k[5:]}" if k.startswith("loss_") else k: v for k, v in losses.items()}
        if stage.reads_test_docs and cfg.eval.eval_every_epoch:
            metrics |= evaluate_trained(cfg, accelerator.unwrap_model(model), tokenizer, ds,
                                        retention)[0]
        if tracker:
            log_epoch(step, metrics)
        return metrics

    if tracker:
        for epoch, metrics in sorted(history.items()):
            log_epoch(offset + epoch, metrics)
    evaluation = EpochEvaluation(on_epoch, offset, history)
    callbacks: list[Callback] = [evaluation]
    checkpointer = None
    if cfg.checkpoint.enabled:
        def saved(ckpt: str) -> None:
            if tracker and run_id:
                tracker.set_tags(run_id, {f"pit.stage{index}.last_checkpoint": store.url(ckpt)})

        checkpointer = Checkpointer(
            store, prefix, cfg.checkpoint, accelerator=accelerator, model=model,
            optimizer=optimizer, epoch_sizes=[len(e) for e in epochs], fingerprint=stage_hash,
            history=history, tokenizer=tokenizer, on_saved=saved,
        )
        callbacks.append(checkpointer)
    remaining = sum(len(e) for e in epochs) - state.position.step
    if accelerator.is_main_process:
        log.info("%s stage %d (seed %d): %d of %d steps to train on %d process(es); "
                 "checkpoints under %s", recipe.slug, index, seed, remaining,
                 remaining + state.position.step, accelerator.num_processes,
                 store.url(prefix) if cfg.checkpoint.enabled else "(off)")
    with bar(remaining, f"{recipe.slug} stage {index + 1}") as advance:
        train_stage(model, epochs, tcfg, peak, tokenizer.pad_token_id, accelerator, optimizer,
                    state=state, callbacks=callbacks, progress=advance)
    metrics = evaluation.last
    if accelerator.is_main_process:
        saves = {"steps": [step_of(k) for k in checkpointer.saved],
                 "seconds": checkpointer.seconds} if checkpointer else {}
        with store.staging(key, {"kind": "stage-model", "recipe": recipe.slug, "stage": index,
                                 "seed": seed, "fingerprint": stage_hash, "metrics": metrics,
                                 "checkpoints_this_attempt": saves}) as folder:
            save_model(accelerator.unwrap_model(model), tokenizer, folder)
        if tracker and run_id:
            kept = checkpointer.kept() if checkpointer else []
            tracker.set_tags(run_id, {f"pit.stage{index}.model": store.url(key),
                                      f"pit.stage{index}.checkpoints": store.url(prefix)})
            tracker.log_dict(run_id, {"stage": index, "model": store.url(key),
                                      "checkpoints": kept, "fingerprint": stage_hash,
                                      "saved_this_attempt": saves},
                             f"stages/stage-{index}.json")
    accelerator.wait_for_everyone()
    return key, metrics


def _resume(cfg: PitConfig, store: Store, prefix: str, stage_hash: str, accelerator, model,
            optimizer) -> tuple[StageState, dict[int, dict[str, float]]] | None:
    """Restore the newest intact checkpoint in place; the main process picks and fetches it."""
    cache = Path(cfg.workdir) / "cache" / "checkpoints"
    folder: str | None = None
    if accelerator.is_main_process:
        found = fetch_latest(store, prefix, stage_hash, cache)
        folder = None if found is None else str(found[1])
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        box = [folder]
        broadcast_object_list(box, from_process=0)
        folder = box[0]
    if folder is None:
        return None
    return read_checkpoint(Path(folder), model=accelerator.unwrap_model(model), optimizer=optimizer,
                           rank=accelerator.process_index)


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
        tracker = tracker_for(cfg)
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


