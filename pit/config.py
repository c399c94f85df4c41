"""Configuration: one pydantic model per concern, validated as a whole up front.

Every field has a default that finishes on a laptop CPU. Where a config comes
from (a preset, a YAML file, `--set` overrides) is `pit.config_sources`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pit.storage import StorageConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class WorldConfig(_Section):
    """The synthetic knowledge world: fictional films (main domain) and novels (cross domain)."""

    seed: int = Field(0, description="Seed of the world; the same seed gives the same world.")
    n_old: int = Field(60, ge=1, description="Films the base model learns in pre-training.")
    n_train: int = Field(
        60, ge=1, description="Films whose QA pairs and documents recipes train on."
    )
    n_test: int = Field(20, ge=1, description="Films whose documents are learned and QA evaluated.")
    n_cross: int = Field(60, ge=0, description="Novels for the cross-domain setting.")
    paraphrases: int = Field(
        2, ge=1, description="Documents per entity, each a different paraphrase of its facts."
    )
    shuffle_sentences: bool = Field(
        True, description="Shuffle sentence order inside each paraphrase (knowledge augmentation)."
    )
    attributes_per_entity: int = Field(
        13, ge=1, le=13,
        description="Facts stated in each entity's documents; every stated fact is asked.",
    )


class DataConfig(_Section):
    """Which knowledge data set a comparison trains on, and which rows play which part.

    The synthetic world is one source among others: any data set published by
    `pit data synth` or `pit data wiki` (a folder, an s3:// URL, or a key of the
    artifact store) goes through every recipe the same way.
    """

    source: str = Field(
        "synthetic",
        description="'synthetic' builds the world of the `world` section; otherwise a "
        "published data set: a local folder, an s3:// URL, or a key of the artifact store.",
    )
    test_domain: str = Field(
        "films", description="Domain whose test documents are learned and test QA evaluated."
    )
    cross_domains: list[str] | None = Field(
        None,
        description="Domains that train QA and train documents come from when "
        "train.cross_domain is on; unset: every domain but the test domain.",
    )
    retention_questions: int = Field(
        60, ge=0,
        description="Old-world questions held out of all training, asked before and after "
        "training to measure forgetting; 0 turns retention off.",
    )


class ModelConfig(_Section):
    """The model: the embedded Llama-architecture default, or any causal LM."""

    name_or_path: str = Field(
        "embedded",
        description="'embedded' trains a small Llama model from scratch on the world; "
        "otherwise a Hugging Face id, a local folder or an s3:// URI.",
    )
    gguf_file: str | None = Field(None, description="GGUF file inside name_or_path to load.")
    trust_remote_code: bool = Field(False, description="Run code shipped with a Hub model.")
    vocab_size: int = Field(2048, ge=64, description="Tokenizer size for the embedded model.")
    hidden_size: int = Field(128, ge=16)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(512, ge=16)
    max_seq_len: int = Field(256, ge=32, description="Longest training or prompt sequence.")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}"
            )
        return self


class BaseTrainConfig(_Section):
    """Pre-training of the embedded base model on the old world."""

    epochs: int = Field(20, ge=1)
    lr: float = Field(2e-3, gt=0)
    batch_size: int = Field(32, ge=1)
    reading: int = Field(
        2, ge=0, description="Reading-comprehension passages per old entity per epoch: the "
        "skill open-book QA measures.",
    )
    seed: int = 0


class TrainConfig(_Section):
    """Recipe training: the paper's optimiser and schedule, scaled to the model at hand.

    The paper uses AdamW (0.9, 0.95), weight decay 0.1, cosine decay to 10% of the
    peak with no warm-up, and separate learning rates and batch sizes for
    documents (3e-5, 256) and QA (5e-6, 256) on a 7B model; small models from
    scratch need far larger rates, hence the defaults.
    """

    doc_lr: float = Field(1e-3, gt=0, description="Peak learning rate of document batches.")
    qa_lr: float = Field(1e-3, gt=0, description="Peak learning rate of QA batches.")
    doc_batch_size: int = Field(16, ge=1)
    qa_batch_size: int = Field(32, ge=1)
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = Field(0.1, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Cosine decays to this share of peak.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    grad_clip: float = Field(1.0, gt=0)
    test_doc_epochs: int = Field(
        10, ge=1, description="Epochs of a stage that reads test documents (paper: 10 on 7B)."
    )
    pit_epochs: int = Field(3, ge=1, description="Epochs of the PIT stage (QA + train docs).")
    it_epochs: int = Field(1, ge=1, description="Epochs of an instruction-tuning (QA) stage.")
    cpt_qa_count: int = Field(
        64, ge=0,
        description="Train QA pairs mixed into every stage that trains test documents with no "
        "QA of its own (cpt and the last stage of the PIT recipes), so the answer format "
        "survives (the paper keeps 64 in cpt).",
    )
    replay_share: float = Field(
        0.0, ge=0,
        description="Old documents replayed per test document in stages with a `replay` source: "
        "the trade between learning the new and keeping the old.",
    )
    cross_domain: bool = Field(
        False, description="Take train QA and train docs from the second domain (novels)."
    )
    packing: bool = Field(
        False,
        description="Pack each kind's examples into rows of train.pack_row_len tokens (best-fit "
        "decreasing), position ids restarting and attention kept within each example, loss "
        "weights kept, so no step computes on padding. A batch is then max(1, round(batch "
        "size x mean example length / row length)) rows: about as many tokens as unpacked. "
        "Off by default: the published results were measured unpacked.",
    )
    pack_row_len: Annotated[int, Field(ge=8)] | Literal["auto"] = Field(
        "auto",
        description="Length of packed rows. 'auto': under flash attention model.max_seq_len; "
        "under a block mask (sdpa, eager: every CPU), where attention costs the whole row, "
        "the length per kind (documents, QA) that costs the fewest FLOPs, between the kind's "
        "longest example and model.max_seq_len. A number: every row that long (at most "
        "model.max_seq_len).",
    )
    seed: int = 0
    launcher: Literal["process", "inline"] = Field(
        "process",
        description="'process' trains each recipe stage in its own process through "
        "`accelerate launch`, so a crash (killed, out of memory) fails only that process and "
        "a retry resumes from the last checkpoint; 'inline' trains in the calling process "
        "(quicker to start, for notebooks and unit tests).",
    )
    num_processes: int | None = Field(
        None, ge=1,
        description="Training processes per stage under accelerate; unset: one per GPU, "
        "or 1 on a CPU-only machine. Each process trains its share of every batch (rows "
        "or examples), so batch sizes stay global and the result is that of one process.",
    )
    distributed: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description="How several processes share the model: 'ddp' keeps a whole copy per "
        "process; 'fsdp' shards weights, gradients and optimiser state across GPUs (FSDP2; "
        "CPU processes stay DDP), for models whose training state does not fit one GPU. fsdp "
        "needs checkpoint.enabled=false: checkpoints hold whole tensors.",
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="'bf16': matrix products under bfloat16 autocast, weights and optimiser "
        "in float32; 'auto': bf16 on a CUDA GPU that supports it, fp32 elsewhere.",
    )
    attention: Literal["sdpa", "eager", "flash_attention_2", "flash_attention_3"] = Field(
        "sdpa",
        description="Attention kernel of the trained model. flash_attention_2/3 need a CUDA "
        "GPU and the flash-attn package; with train.packing they attend only inside each "
        "example instead of masking a full row.",
    )
    compile: bool = Field(
        False, description="torch.compile the model's forward: minutes of compiling, then "
        "faster steps on a GPU (most with packing, whose rows keep one shape)."
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute each layer's activations in the backward pass: about "
        "a third more compute for far less memory, for long rows or large models."
    )
    peak_flops: float | None = Field(
        None, gt=0,
        description="One device's peak FLOP/s, which MFU is reported against (times the "
        "processes); unset: the dense bf16 peak of a known GPU (none on a CPU: no MFU there).",
    )


class CheckpointConfig(_Section):
    """When a training stage saves its state to the artifact store, and how many it keeps.

    A checkpoint holds the model (safetensors), optimiser moments, RNG states and
    the data position, so a stage killed at any step resumes and ends with the
    same weights and metrics as one that never stopped. A kill loses at most
    `every_steps` optimiser steps; each checkpoint costs one model and
    optimiser write (two to three times the model's size), so large models
    want a larger `every_steps`.
    """

    enabled: bool = Field(True, description="Save checkpoints and resume from them on a retry.")
    every_steps: int = Field(
        50, ge=0, description="Save every N optimiser steps inside an epoch; 0: only at epoch ends."
    )
    at_epoch_end: bool = Field(True, description="Save at the end of every epoch but the last.")
    keep_last: int = Field(
        2, ge=1, description="Complete checkpoints kept per stage; older ones are deleted."
    )


class EvalConfig(_Section):
    """How models are scored, and how often during training."""

    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto",
        description="Questions (or documents, for perplexity) per batch; 'auto': as many as "
        "memory holds (a share of the GPU memory left after the model, from the KV cache "
        "per token; on a CPU at most 64). Predictions do not depend on it.",
    )
    max_new_tokens: int = Field(
        16, ge=1,
        description="Longest answer in tokens; a row stops earlier at end of sequence or a "
        "line break, and a batch when all its rows have.",
    )
    few_shot: int = Field(
        5, ge=0, description="Demonstrations for the untrained base model (closed and open book)."
    )
    every_epochs: int = Field(
        1, ge=0,
        description="Score every N-th epoch of a stage that reads the test documents (and its "
        "last); 0: only at the end of each stage. Every stage is scored at its end.",
    )
    train_qa_sample: int = Field(
        100, ge=0,
        description="Train QA pairs answered after each stage: is the answer format kept?",
    )
    cloze: bool = Field(
        True, description="Fill-in-the-blank recall of test facts: stored, if not extractable.",
    )


class TrackingConfig(_Section):
    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI; MLFLOW_TRACKING_URI overrides it; "
        "default: a SQLite file under the work directory.",
    )
    experiment: str = Field("pit", description="MLflow experiment of this comparison.")


# Fields that moved, by their old dotted path: configs that still use them keep working.
MOVED_FIELDS = {
    "artifact_root": "storage.root",
}


class PitConfig(_Section):
    """A whole comparison: data, model, training, evaluation, tracking and storage."""

    preset: str = "custom"
    workdir: str = Field("pit-runs", description="Local folder for data, models, runs.")
    methods: list[str] = Field(
        default_factory=lambda: ["closed-book", "open-book", "cpt", "cpt-it", "mix-all", "pit"],
        description="Recipe slugs to run; 'all' runs every recipe.",
    )
    seeds: int = Field(1, ge=1, description="Seeds per recipe; metrics are averaged.")
    data: DataConfig = DataConfig()
    world: WorldConfig = WorldConfig()
    model: ModelConfig = ModelConfig()
    base: BaseTrainConfig = BaseTrainConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    tracking: TrackingConfig = TrackingConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    storage: StorageConfig = Field(
        default_factory=StorageConfig,
        description="Where data sets, models and checkpoints go (a folder or s3://bucket/prefix) "
        "and how S3 is reached; unset root: <workdir>/artifacts.",
    )

    @model_validator(mode="before")
    @classmethod
    def _settle_fields(cls, data: Any) -> Any:
        """Read moved fields at their new place; the artifact root follows the workdir."""
        if not isinstance(data, dict):
            return data
        data = _move_fields(data)
        storage = data.get("storage")
        if storage is None or isinstance(storage, dict):
            storage = dict(storage or {})
            if storage.get("root") in (None, ""):
                workdir = data.get("workdir", cls.model_fields["workdir"].default)
                storage["root"] = str(Path(workdir) / "artifacts")
            data["storage"] = storage
        return data

    @model_validator(mode="after")
    def _fsdp_without_checkpoints(self) -> PitConfig:
        if self.train.distributed == "fsdp" and self.checkpoint.enabled:
            raise ValueError("train.distributed=fsdp cannot write checkpoints yet (they hold "
                             "whole tensors, FSDP holds shards); set checkpoint.enabled=false")
        return self


def _move_fields(data: dict[str, Any]) -> dict[str, Any]:
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for old, new in MOVED_FIELDS.items():
        *old_parents, old_leaf = old.split(".")
        node = data
        for part in old_parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or old_leaf not in node:
            continue
        value = node.pop(old_leaf)
        section, leaf = new.split(".")
        target = data.setdefault(section, {})
        if isinstance(target, dict) and leaf not in target and value is not None:
            target[leaf] = value
    return data
