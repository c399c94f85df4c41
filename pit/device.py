"""The device a step computes on, and the accelerate objects that put a model there."""

from __future__ import annotations

import torch

from pit.config import TrainConfig
from pit.train.loop import make_optimizer


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def accelerator():
    """An Accelerator for this process: the GPU when there is one, else the CPU."""
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available())


def prepare(acc, model: torch.nn.Module, tcfg: TrainConfig):
    """The model and a fresh optimiser of the paper's kind, wrapped by `acc`."""
    return acc.prepare(model, make_optimizer(model, tcfg))
