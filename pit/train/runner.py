"""One recipe stage, trained in this process: setup, then fit, then publish.

The order is torchtune's recipe lifecycle. `setup` gathers everything the
stage needs (data, model, batches of every epoch, callbacks) and restores the
newest intact checkpoint of this very stage, callbacks included; `fit` runs
the training loop from there; `publish` writes the final model, with every
epoch's metrics beside it, under the stage's content key. Each process that
accelerate started runs all three, each training its share of every batch;
only the main one writes. The scores of each epoch are computed under the
training's precision (bf16 autocast on a GPU), which flash attention needs.
"""

from __future__ import annotations

import contextlib
import logging

import torch
from pydantic import BaseModel

from pit.artifacts import cache_root, model_path, store_for
from pit.config import PitConfig, TrainConfig
from pit.data.dataset import KnowledgeDataset
from pit.data.source import load_dataset
from pit.data.views import retention_ids, training_view
from pit.device import accelerator, prepare
from pit.evaluation import score
from pit.keys import stage_output
from pit.modeling import load_model, save_model, use_attention
from pit.progress import bar
from pit.recipe import Recipe, Stage
from pit.tracking import tracker_for
from pit.train.batches import Batch, epoch_batches, stage_examples
from pit.train.callbacks import (
    Checkpointer,
    EpochEvaluation,
    EpochTracking,
    GracefulStop,
    kept,
    restore,
)
from pit.train.callbacks.tracking import record_stage
from pit.train.checkpoint import step_of
from pit.train.examples import Example, ExampleBuilder
from pit.train.loop import Callback, StageState, autocast_dtype, train_stage
from pit.train.packing import slot_cost
from pit.train.signals import StopRequest

log = logging.getLogger(__name__)


class StageJob(BaseModel):
    """Everything one stage needs, as plain data that survives a trip through a JSON file."""

    config: PitConfig
    recipe: Recipe
    index: int
    model_ref: str
    data_ref: str
    run_id: str | None = None
    seed: int = 0

    @property
    def stage(self) -> Stage:
        return self.recipe.stages[self.index]

    @property
    def train(self) -> TrainConfig:
        """The train section with this seed's offset: seed 0 is the configured seed."""
        return self.config.train.model_copy(update={"seed": self.config.train.seed + self.seed})

    @property
    def where(self) -> str:
        return f"{self.recipe.slug} stage {self.index} (seed {self.seed})"


def examples_for(cfg: PitConfig, ds: KnowledgeDataset, stage: Stage, builder: ExampleBuilder,
                 train: TrainConfig) -> list[Example]:
    """One epoch's examples of a stage: rows of its domains, retention questions left out."""
    view = training_view(ds, cfg.data, cfg.train.cross_domain or stage.cross_domain)
    return stage_examples(view, stage, builder, train, exclude_qa=retention_ids(ds, cfg.data))


def stage_batches(cfg: PitConfig, ds: KnowledgeDataset, stage: Stage, index: int,
                  train: TrainConfig, builder: ExampleBuilder, model: torch.nn.Module
                  ) -> list[list[Batch]]:
    """Stage `index`'s batches, epoch by epoch; `model` prices a packed row's length."""
    examples = examples_for(cfg, ds, stage, builder, train)
    base_seed = train.seed * 1_000_003 + index * 1009
    cost = slot_cost(model) if train.packing else None
    return [epoch_batches(examples, stage, train, base_seed + e, cfg.model.max_seq_len, cost)
            for e in range(stage.resolved_epochs(train))]


def stage_offset(recipe: Recipe, index: int, train: TrainConfig) -> int:
    """Epochs before stage `index`: per-epoch metric steps run on across stages."""
    return sum(s.resolved_epochs(train) for s in recipe.stages[:index])


class StageRunner:
    """Trains one stage: `run` calls `setup`, `fit` and `publish`, in that order."""

    def __init__(self, job: StageJob) -> None:
        self.job = job
        self.cfg = job.config
        self.store = store_for(job.config)

    def setup(self) -> None:
        job, cfg = self.job, self.cfg
        self.accelerator = accelerator(job.train)
        with self.accelerator.main_process_first():
            ds = load_dataset(cfg, job.data_ref)
            model, self.tokenizer = load_model(model_path(cfg, job.model_ref), cfg.model)
        use_attention(model, job.train.attention)
        self.out = stage_output(cfg, job.stage, job.index, job.model_ref, ds.fingerprint, job.seed)
        self._batches(ds, model)
        torch.manual_seed(job.train.seed * 7919 + job.index)
        self.model, self.optimizer = prepare(self.accelerator, model, job.train)
        self.stop = StopRequest()
        self.callbacks = self._callbacks(ds)
        self.state = StageState()
        self.resumed_from: int | None = None
        if cfg.checkpoint.enabled:
            resumed = restore(self.store, self.out.checkpoints, self.out.hash,
                              cache_root(cfg, self.store), self.accelerator, self.model,
                              self.optimizer, self.callbacks)
            if resumed is not None:
                self.state = resumed
                pos = resumed.position
                self.resumed_from = pos.step
                log.info("%s resumes after step %d (epoch %d, batch %d)", job.where, pos.step,
                         pos.epoch, pos.batch)

    def _batches(self, ds: KnowledgeDataset, model: torch.nn.Module) -> None:
        builder = ExampleBuilder(self.tokenizer, self.cfg.model.max_seq_len)
        self.epochs = stage_batches(self.cfg, ds, self.job.stage, self.job.index, self.job.train,
                                    builder, model)

    def _callbacks(self, ds: KnowledgeDataset) -> list[Callback]:
        job, cfg = self.job, self.cfg
        every = cfg.eval.every_epochs if job.stage.reads_test_docs else 0

        dtype = autocast_dtype(job.train, self.accelerator.device)

        def score_now() -> dict[str, float]:
            cast = (torch.autocast(self.accelerator.device.type, dtype=dtype) if dtype
                    else contextlib.nullcontext())
            with cast:
                return score(cfg, self.accelerator.unwrap_model(self.model), self.tokenizer,
                             ds)[0]

        self.evaluation = EpochEvaluation(score_now, every, len(self.epochs))
        callbacks: list[Callback] = [self.evaluation]
        self.tracker = None
        if job.run_id and self.accelerator.is_main_process:
            self.tracker = tracker_for(cfg)
            offset = stage_offset(job.recipe, job.index, job.train)
            callbacks.append(EpochTracking(self.tracker, job.run_id, offset))
        self.checkpointing = None
        if cfg.checkpoint.enabled:
            self.checkpointing = Checkpointer(
                self.store, self.out.checkpoints, cfg.checkpoint, accelerator=self.accelerator,
                model=self.model, optimizer=self.optimizer,
                epoch_sizes=[len(e) for e in self.epochs], fingerprint=self.out.hash,
                tokenizer=self.tokenizer, on_saved=self._checkpoint_saved,
                callbacks=list(callbacks),
            )
            callbacks.append(self.checkpointing)
        callbacks.append(GracefulStop(self.stop, self.accelerator, self.checkpointing, job.where,
                                      sum(len(e) for e in self.epochs)))
        return callbacks

    def _checkpoint_saved(self, key: str) -> None:
        if self.tracker and self.job.run_id:
            self.tracker.set_tags(self.job.run_id, {
                f"pit.stage{self.job.index}.last_checkpoint": self.store.url(key)})

    def fit(self) -> None:
        done = self.state.position.step
        remaining = sum(len(e) for e in self.epochs) - done
        if self.accelerator.is_main_process:
            where = self.store.url(self.out.checkpoints) if self.checkpointing else "(off)"
            log.info("%s: %d of %d steps to train on %d process(es); checkpoints under %s",
                     self.job.where, remaining, remaining + done,
                     self.accelerator.num_processes, where)
        stage, tcfg = self.job.stage, self.job.train
        peak = {"doc": stage.doc_lr or tcfg.doc_lr, "qa": stage.qa_lr or tcfg.qa_lr}
        with (self.stop.installed(),
              bar(remaining, f"{self.job.recipe.slug} stage {self.job.index + 1}") as advance):
            train_stage(self.model, self.epochs, tcfg, peak, self.tokenizer.pad_token_id,
                        self.accelerator, self.optimizer, state=self.state,
                        callbacks=self.callbacks, progress=advance)
        speed = self.state.throughput
        if self.accelerator.is_main_process and speed:
            mfu = f", MFU {speed['mfu']:.1f}%" if "mfu" in speed else ""
            log.info("%s: last epoch %.0f real tokens/s%s", self.job.where,
                     speed["tokens_per_s"], mfu)

    def publish(self) -> tuple[str, dict[str, float]]:
        """Publish the final model with its metrics; returns its key and last-epoch metrics."""
        job, out = self.job, self.out
        metrics = self.evaluation.last
        # Under FSDP every process holds a shard: gathering the weights takes them all.
        full = (self.accelerator.get_state_dict(self.model)
                if job.train.distributed == "fsdp" else None)
        if self.accelerator.is_main_process:
            ck = self.checkpointing
            saves = {"steps": [step_of(k) for k in ck.saved], "seconds": ck.seconds} if ck else {}
            manifest = {"kind": "stage-model", "trained_for": job.recipe.slug,
                        "stage": job.index, "seed": job.seed, "fingerprint": out.hash,
                        "metrics": metrics, "checkpoints_this_attempt": saves,
                        "resumed_from_step": self.resumed_from,
                        "history": self.evaluation.state_dict()["history"]}
            with self.store.staging(out.key, manifest) as folder:
                save_model(self.accelerator.unwrap_model(self.model), self.tokenizer, folder,
                           state_dict=full)
            if self.tracker and job.run_id:
                record_stage(self.tracker, job.run_id, job.index, self.store.url(out.key),
                             self.store.url(out.checkpoints),
                             {"checkpoints": kept(self.store, out.checkpoints),
                              "fingerprint": out.hash, "saved_this_attempt": saves,
                              "resumed_from_step": self.resumed_from, "reused": False})
        self.accelerator.wait_for_everyone()
        return out.key, metrics

    def run(self) -> tuple[str, dict[str, float]]:
        self.setup()
        self.fit()
        return self.publish()
