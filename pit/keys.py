"""Where every output lives in the artifact store: a name plus a hash of what produced it.

As in marin's executor, a key is a function of the work, never of the run that
did it: the whole config (minus `NOT_IN_KEYS`, the fields that change where
or how things run but not what they compute) and the keys or fingerprints of
the inputs. So the same work always lands on the same key, and:

- a comparison started again after it was killed finds the stages and
  checkpoints its first attempt finished (no MLflow run id in any key);
- two recipes whose first stages are the same (stage 0 of `pit` and `pit--`:
  same stage, same input model, same data, same seed) share one output, and
  the stage trains once;
- a changed field that matters gives a new key, so nothing stale is reused.

The data set enters by its content fingerprint, not by where it was read from,
and the synthetic `world` section enters only through that fingerprint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pit.config import ModelConfig, PitConfig
from pit.recipe import Stage
from pit.storage import fingerprint

# Fields of PitConfig that change where outputs go, how work is run or shown, never
# what a step computes. Every other field enters every hash.
NOT_IN_KEYS = (
    "preset", "workdir", "methods", "seeds", "tracking", "storage", "checkpoint",
    "train.launcher", "train.num_processes",
    # kernels and sharding: the same arithmetic, up to the order of floating-point sums
    "train.distributed", "train.attention", "train.compile", "train.gradient_checkpointing",
    "train.peak_flops",  # what MFU is reported against
    "eval.batch_size",  # how many questions share a forward pass, not what is predicted
    "data.source",  # the data set enters by its content fingerprint
    "world",  # it shapes the synthetic data set, whose fingerprint enters instead
)

_HASH_CHARS = 16


def _hash(cfg: PitConfig, job: dict[str, Any], inputs: dict[str, str]) -> str:
    return fingerprint({"config": cfg, **job}, exclude=[f"config.{f}" for f in NOT_IN_KEYS],
                       inputs=inputs)


def dataset_key(cfg: PitConfig) -> str:
    """The synthetic world of `cfg.world`: named by that section alone."""
    return f"datasets/world-{fingerprint(cfg.world)[:_HASH_CHARS]}"


def base_hash(cfg: PitConfig, dataset_fingerprint: str) -> str:
    """Everything the embedded base model depends on: its own sections, not the recipes'.

    Recipe training settings are left out on purpose, so tuning a recipe never
    pre-trains the base again; the data section is in, since it decides which
    old questions are held out of pre-training.
    """
    own = {"model": cfg.model, "base": cfg.base, "data": cfg.data}
    return fingerprint({"step": "base", **own}, exclude=["data.source"],
                       inputs={"dataset": dataset_fingerprint})


def base_key(cfg: PitConfig, dataset_fingerprint: str) -> str:
    return f"models/base-{base_hash(cfg, dataset_fingerprint)[:_HASH_CHARS]}"


def stage_hash(cfg: PitConfig, stage: Stage, index: int, model_ref: str,
               dataset_fingerprint: str, seed: int) -> str:
    """Everything a stage's weights and per-epoch metrics depend on.

    The recipe's slug is not part of it, only the stage itself and its
    position (the position seeds the data order): the same stage of two
    recipes, from the same model, is one piece of work.
    """
    return _hash(cfg, {"step": "stage", "stage": stage, "index": index, "seed": seed},
                 {"model": model_ref, "dataset": dataset_fingerprint})


def _stage_name(stage: Stage, index: int) -> str:
    names = "+".join(s.name for s in stage.sources)
    return re.sub(r"[^A-Za-z0-9_+.-]", "-", f"s{index}-{names}")


def stage_key(stage: Stage, index: int, h: str) -> str:
    """Where a stage's final model is published."""
    return f"stages/{_stage_name(stage, index)}-{h[:_HASH_CHARS]}"


def checkpoint_prefix(stage: Stage, index: int, h: str) -> str:
    """Where a stage's checkpoints go: their own prefix, named like the stage's model."""
    return f"checkpoints/{_stage_name(stage, index)}-{h[:_HASH_CHARS]}"


def is_store_key(ref: str) -> bool:
    """Whether a model reference is an output of the artifact store, not an external id."""
    return ref.startswith(("models/", "stages/"))


@dataclass(frozen=True)
class StageOutput:
    """Where one stage's work lands: its hash, its final model's key, its checkpoints' prefix."""

    hash: str
    key: str
    checkpoints: str


def stage_output(cfg: PitConfig, stage: Stage, index: int, model_ref: str,
                 dataset_fingerprint: str, seed: int) -> StageOutput:
    h = stage_hash(cfg, stage, index, model_ref, dataset_fingerprint, seed)
    return StageOutput(h, stage_key(stage, index, h), checkpoint_prefix(stage, index, h))


def pretrained_hash(model: ModelConfig, identity: dict[str, Any]) -> str:
    """An external model as pit republishes it: the content it was read from, and how.

    `identity` (`pit.modeling.model_identity`) names the files read, the
    GGUF file among them; the path or id they were read from is left out, so
    the same bytes under another name are the same model. Of the model
    section only what changes the saved weights enters (dtype, remote code);
    the embedded model's size fields do not apply to it.
    """
    how = model.model_dump(include={"dtype", "trust_remote_code"})
    return fingerprint({"step": "pretrained", "model": how, "source": identity})


def pretrained_key(model: ModelConfig, identity: dict[str, Any]) -> str:
    """Where an external model is published once per content, as safetensors."""
    return f"models/pretrained-{pretrained_hash(model, identity)[:_HASH_CHARS]}"
