"""The training loop of one recipe stage: short enough to read in one sitting.

The schedule is the paper's: AdamW (0.9, 0.95), weight decay 0.1, cosine decay
from the peak to `min_lr_ratio` of it over the stage, no warm-up by default.
Each batch takes the peak rate of its kind (documents or QA) times the common
cosine factor, so one optimiser serves a stage that mixes both.

Loss is the mean over tokens of the per-token negative log-likelihood times
the token's weight (0 for prompt tokens, 1 for the rest, 0.5/1.0 in weighted
continued pre-training), divided by the weight sum. With several processes
each trains its share of every batch, weighed so that the gradient is the
whole batch's (`pit.train.sharding`).

On a GPU the forward pass runs under bf16 autocast (`train.precision`); every
epoch's real tokens per second and MFU (`pit.train.throughput`) are left in
`StageState.throughput` for the tracking callback, apart from the epoch's
metrics, since a resumed epoch trains as fast as its machine, not as before.

Callbacks see the end of every step and every epoch; checkpointing, tracking
and evaluation hook in there from their own modules.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from pit.config import TrainConfig
from pit.train.batches import Batch
from pit.train.packing import loss_divisor, packed_loss
from pit.train.sharding import first_unit, loss_weight, shard
from pit.train.throughput import ModelFlops, Throughput, peak_flops


def collate(batch: Batch, pad_id: int, device) -> tuple[torch.Tensor, ...]:
    """Right-pad to the longest example of the batch; padding has weight 0."""
    n = max(len(e.input_ids) for e in batch.examples)
    ids = torch.full((len(batch.examples), n), pad_id, dtype=torch.long)
    w = torch.zeros((len(batch.examples), n), dtype=torch.float32)
    att = torch.zeros((len(batch.examples), n), dtype=torch.long)
    for i, e in enumerate(batch.examples):
        k = len(e.input_ids)
        ids[i, :k] = torch.tensor(e.input_ids)
        w[i, :k] = torch.tensor(e.weights)
        att[i, :k] = 1
    return ids.to(device), w.to(device), att.to(device)


def weighted_loss(logits: torch.Tensor, ids: torch.Tensor, w: torch.Tensor,
                  total: float | None = None) -> torch.Tensor:
    """Weighted mean token loss; `total` replaces the weight sum of `w` as the divisor."""
    nll = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)).float(), ids[:, 1:].reshape(-1),
        reduction="none",
    )
    weights = w[:, 1:].reshape(-1)
    return (nll * weights).sum() / loss_divisor(weights, total)


def batch_loss(model: torch.nn.Module, batch: Batch, pad_id: int, device,
               unwrapped: torch.nn.Module, total: float | None = None) -> torch.Tensor:
    """The loss of one batch, padded or packed; `unwrapped` is the Hugging Face model in `model`.

    Its attention implementation decides how a packed batch keeps its examples apart.
    """
    if batch.rows is not None:
        return packed_loss(model, batch.rows, batch.row_len, pad_id, device,
                           unwrapped.config._attn_implementation, unwrapped.dtype, total)
    ids, w, att = collate(batch, pad_id, device)
    return weighted_loss(model(input_ids=ids, attention_mask=att).logits, ids, w, total)


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bfloat16 where `train.precision` asks for it (or `auto` finds a GPU that has it)."""
    if cfg.precision == "bf16":
        return torch.bfloat16
    if cfg.precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def step_loss(model: torch.nn.Module, batch: Batch, pad_id: int, accelerator,
              unwrapped: torch.nn.Module, dtype: torch.dtype | None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """What this process backpropagates, and the whole batch's loss (the same on every process).

    One process computes the batch's loss; several compute their shares
    (`pit.train.sharding`) and add them up for the reported value.
    """
    device = accelerator.device
    cast = (torch.autocast(device.type, dtype=dtype) if dtype is not None
            else contextlib.nullcontext())
    world = accelerator.num_processes
    with cast:
        if world == 1:
            loss = batch_loss(model, batch, pad_id, device, unwrapped)
            return loss, loss.detach()
        part = shard(batch, accelerator.process_index, world)
        total = loss_weight(batch)
        if part is None:
            share = batch_loss(model, first_unit(batch), pad_id, device, unwrapped, total) * 0.0
        else:
            share = batch_loss(model, part, pad_id, device, unwrapped, total)
    return share * world, accelerator.reduce(share.detach(), reduction="sum")


def cosine_factor(step: int, total: int, min_ratio: float, warmup: int = 0) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig,
                   fused: bool = False) -> torch.optim.AdamW:
    """AdamW without decay on vectors (norms); `fused`: one kernel for all parameters (CUDA)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.doc_lr, betas=cfg.betas, fused=fused or None)


@dataclass
class Position:
    """Where a stage stands: the epoch and the batch inside it. Checkpoints store it."""

    epoch: int = 0
    batch: int = 0
    step: int = 0


@dataclass
class StageState:
    """What the loop carries between steps; with the weights and optimiser, all a resume needs.

    `epoch_losses` holds the current epoch's losses so far, so an epoch
    resumed mid-way reports the same mean loss as one that ran through.
    `throughput` holds the last finished epoch's speed (`tokens_per_s`, `mfu`)
    in this attempt; checkpoints leave it out.
    """

    position: Position = field(default_factory=Position)
    epoch_losses: dict[str, list[float]] = field(default_factory=dict)
    throughput: dict[str, float] = field(default_factory=dict)


class Callback:
    """Hooks after each optimiser step and each epoch; callbacks run in the order given.

    All callbacks of an epoch see one `metrics` dict: a callback may add to it
    (the evaluation adds its scores) and those after it see the additions.
    A callback that must survive a resume keeps its state in `state_dict`;
    a checkpoint stores it under the callback's `name` and hands it back to
    `load_state_dict` before training continues.
    """

    name: str = "callback"

    def on_step_end(self, state: StageState, loss: float, kind: str, lr: float) -> None: ...

    def on_epoch_end(self, state: StageState, metrics: dict[str, float]) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def train_stage(
    model: torch.nn.Module,
    epochs: Sequence[Sequence[Batch]],
    cfg: TrainConfig,
    peak_lr: dict[str, float],
    pad_id: int,
    accelerator,
    optimizer: torch.optim.Optimizer | None = None,
    state: StageState | None = None,
    callbacks: Sequence[Callback] = (),
    progress: Callable[[int], None] | None = None,
) -> StageState:
    """Run (or continue, from `state.position`) every epoch of a stage."""
    optimizer = optimizer or make_optimizer(model, cfg)
    state = state or StageState()
    total = sum(len(e) for e in epochs)
    warmup = int(cfg.warmup_ratio * total)
    unwrapped = accelerator.unwrap_model(model)
    dtype = autocast_dtype(cfg, accelerator.device)
    peak = peak_flops(accelerator.device, cfg.peak_flops)  # one device's; all of them work
    meter = Throughput(ModelFlops(unwrapped), peak and peak * accelerator.num_processes)
    model.train()
    for epoch in range(state.position.epoch, len(epochs)):
        batches = epochs[epoch]
        for b in range(state.position.batch, len(batches)):
            batch = batches[b]
            lr = peak_lr[batch.kind] * cosine_factor(
                state.position.step, total, cfg.min_lr_ratio, warmup
            )
            for g in optimizer.param_groups:
                g["lr"] = lr
            meter.start()
            loss, whole = step_loss(model, batch, pad_id, accelerator, unwrapped, dtype)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            value = whole.item()
            meter.stop([len(e.input_ids) for e in batch.examples])
            state.epoch_losses.setdefault(batch.kind, []).append(value)
            state.position = Position(epoch, b + 1, state.position.step + 1)
            for cb in callbacks:
                cb.on_step_end(state, value, batch.kind, lr)
            if progress:
                progress(1)
        metrics = {
            f"loss_{k}": sum(v) / len(v) for k, v in state.epoch_losses.items() if v
        }
        state.position = Position(epoch + 1, 0, state.position.step)
        state.epoch_losses = {}
        state.throughput = meter.figures()
        meter.reset()
        for cb in callbacks:
            cb.on_epoch_end(state, metrics)
        model.train()
    return state
