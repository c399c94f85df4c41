"""The device a step computes on, and the accelerate objects that put a model there.

`prepare` is where the GPU path of `train` is switched on, in this order:
activation checkpointing (the layers' forward is wrapped before anything
else sees it), the move to the device, the optimiser (fused AdamW on CUDA:
one kernel for all parameters instead of several per tensor), accelerate's
wrapping (DDP, or FSDP2 with `train.distributed=fsdp`), and last
`torch.compile`, in place on the Hugging Face model inside the wrapper, so
state-dict keys, checkpoints and `save_pretrained` see the same module.
bf16 autocast is the training loop's (`pit.train.loop.autocast_dtype`), not
accelerate's, so one process can train stages of different precisions.
"""

from __future__ import annotations

import torch

from pit.config import TrainConfig
from pit.train.loop import make_optimizer


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def accelerator(tcfg: TrainConfig | None = None):
    """An Accelerator for this process: the GPU when there is one, else the CPU.

    With `train.distributed=fsdp` it shards every decoder layer (the model's
    `_no_split_modules`) with FSDP2 across the launched GPU processes;
    accelerate keeps CPU processes on DDP.
    """
    from accelerate import Accelerator

    kwargs = {}
    if tcfg is not None and tcfg.distributed == "fsdp":
        from accelerate.utils import FullyShardedDataParallelPlugin

        kwargs["fsdp_plugin"] = FullyShardedDataParallelPlugin(
            fsdp_version=2, auto_wrap_policy="transformer_based_wrap",
            state_dict_type="FULL_STATE_DICT", reshard_after_forward=True,
        )
    return Accelerator(cpu=not torch.cuda.is_available(), **kwargs)


def checkpoint_activations(model: torch.nn.Module) -> None:
    """Recompute each decoder layer in the backward pass (non-reentrant checkpointing)."""
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def prepare(acc, model: torch.nn.Module, tcfg: TrainConfig):
    """The model and a fresh optimiser of the paper's kind, wrapped by `acc` (see module doc)."""
    if tcfg.gradient_checkpointing:
        checkpoint_activations(model)
    if tcfg.distributed != "fsdp":
        model = model.to(acc.device)  # FSDP places each shard itself
    optimizer = make_optimizer(model, tcfg, fused=acc.device.type == "cuda")
    model, optimizer = acc.prepare(model, optimizer)
    if tcfg.compile:
        acc.unwrap_model(model).compile()
    return model, optimizer
