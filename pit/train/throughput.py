"""Training speed: real tokens per second and model FLOPs utilisation (MFU).

Tokens are the examples' own tokens, never pads: a padded trainer and a
packed one that train on the same examples report comparable figures.

MFU is the model FLOPs a step's real tokens need over the time it took,
over the device's peak. Model FLOPs follow PaLM's count (Chowdhery et al.
2022, appendix B), the convention behind published MFU figures:

    per token   6 * N  +  12 * layers * attention width * example length

with N the parameters that multiply (the input embedding is a lookup and
does not count, unless it is tied to the output layer, which multiplies),
and attention counted over each example's own length, unmasked, as PaLM
does. Work a trainer does on padding, or saves by skipping the output layer
on prompts, does not change the count: MFU measures useful work.

The peak is `train.peak_flops`, or the dense bf16 peak of a known GPU
(`PEAK_BF16`, matched on the CUDA device name), times the number of
processes, which train one global batch together; a CPU has no entry, so
MFU is reported there only when `train.peak_flops` is set.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets, FLOP/s.
# More specific names first: the first one contained in the device name wins.
PEAK_BF16: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("GH200", 989e12),
    ("H200", 989e12),
    ("H100", 989e12),
    ("H800", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
)


def peak_for_name(name: str) -> float | None:
    """The dense bf16 peak of a GPU by its CUDA name ("NVIDIA H100 80GB HBM3"); None if unknown."""
    return next((peak for key, peak in PEAK_BF16 if key in name), None)


def peak_flops(device: torch.device, override: float | None = None) -> float | None:
    """The peak FLOP/s MFU is reported against: `override`, else the GPU's; None on a CPU."""
    if override:
        return override
    if device.type != "cuda":
        return None
    return peak_for_name(torch.cuda.get_device_name(device))


def matmul_params(model: torch.nn.Module) -> int:
    """Parameters that take part in matrix products: all but an untied input embedding."""
    total = sum(p.numel() for p in model.parameters())
    embed = model.get_input_embeddings()
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if embed is not None and (out is None or out.weight is not embed.weight):
        total -= embed.weight.numel()
    return total


def attention_width(config) -> tuple[int, int]:
    """(layers, heads x head dim) of a Hugging Face decoder config; (0, 0) if it names neither."""
    heads = getattr(config, "num_attention_heads", None)
    layers = getattr(config, "num_hidden_layers", None)
    if not heads or not layers:
        return 0, 0
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return layers, heads * head_dim


class ModelFlops:
    """Training FLOPs (forward and backward) of a model for examples of given lengths."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.params = matmul_params(model)
        self.layers, self.width = attention_width(model.config)

    def __call__(self, lengths: Sequence[int]) -> float:
        tokens = sum(lengths)
        attention = 12 * self.layers * self.width * sum(k * k for k in lengths)
        return 6.0 * self.params * tokens + attention


class Throughput:
    """Counts the real tokens and FLOPs of timed steps; `figures` gives tokens/s and MFU.

    A step is timed from before its forward pass to after its loss is read
    back (`loss.item()` waits for the device), so the time includes the
    optimiser step and leaves out what callbacks do between steps
    (evaluation, checkpoints).
    """

    def __init__(self, flops: ModelFlops, peak: float | None) -> None:
        self.flops = flops
        self.peak = peak
        self.reset()

    def reset(self) -> None:
        self.tokens = 0
        self.model_flops = 0.0
        self.seconds = 0.0
        self._started = 0.0

    def start(self) -> None:
        self._started = time.perf_counter()

    def stop(self, lengths: Sequence[int]) -> None:
        """End the step started last; `lengths` are the real lengths of its examples."""
        self.seconds += time.perf_counter() - self._started
        self.tokens += sum(lengths)
        self.model_flops += self.flops(lengths)

    def figures(self) -> dict[str, float]:
        """`tokens_per_s`, and `mfu` in percent of the peak where the peak is known."""
        if self.seconds <= 0:
            return {}
        out = {"tokens_per_s": self.tokens / self.seconds}
        if self.peak:
            out["mfu"] = 100.0 * self.model_flops / self.seconds / self.peak
        return out
