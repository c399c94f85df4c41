"""How many rows of a generation or scoring batch fit in memory (`eval.batch_size: auto`).

A row of greedy generation holds its KV cache (a key and a value vector per
layer and key/value head, for every prompt and answer token) and, while its
prompt is read, one layer's transient activations: the MLP's intermediate
vectors and the attention scores, which grow with the square of the length.
Scoring a document (perplexity) keeps no cache but the logits of every
position over the whole vocabulary, which for a 128k vocabulary dwarfs the rest.

On a GPU the budget is a share of the memory free once the model is loaded,
and the row count is capped where larger batches stop paying (every row waits
for the batch's longest answer). On a CPU compute is the limit, not memory: a
few dozen rows already amortise the per-step cost of decoding, and more rows
only add padding (measured on the demo model: 32 to 64 rows fastest), so the
CPU cap is lower, with a share of the free host memory as a bound all the same.
"""

from __future__ import annotations

import torch

GPU_SHARE = 0.5
CPU_SHARE = 0.25
GPU_MAX_ROWS = 256
CPU_MAX_ROWS = 64


def _dims(config) -> tuple[int, int, int, int, int, int]:
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    inter = getattr(config, "intermediate_size", None) or 4 * config.hidden_size
    return config.num_hidden_layers, heads, kv_heads, head_dim, inter, config.vocab_size


def kv_bytes_per_token(config, itemsize: int) -> int:
    """Bytes of KV cache one token costs: a key and a value for every layer and KV head."""
    layers, _, kv_heads, head_dim, _, _ = _dims(config)
    return 2 * layers * kv_heads * head_dim * itemsize


def row_bytes(config, itemsize: int, length: int, all_logits: bool = False) -> int:
    """Peak bytes of one row of `length` tokens: its cache (generation) or logits (scoring)."""
    _, heads, _, _, inter, vocab = _dims(config)
    transient = length * (4 * config.hidden_size + 3 * inter + heads * length) * itemsize
    if all_logits:
        return transient + 3 * length * vocab * 4  # float32 logits, log-probabilities, a copy
    return length * kv_bytes_per_token(config, itemsize) + transient + 2 * vocab * 4


def rows_for(config, itemsize: int, length: int, free: int, gpu: bool,
             all_logits: bool = False) -> int:
    """Rows of `length` tokens a batch may hold, given `free` bytes (at least 1)."""
    budget = free * (GPU_SHARE if gpu else CPU_SHARE)
    rows = int(budget // max(row_bytes(config, itemsize, length, all_logits), 1))
    return max(1, min(rows, GPU_MAX_ROWS if gpu else CPU_MAX_ROWS))


def free_bytes(device: torch.device) -> int:
    """Memory this process may still take on `device`: the GPU's free bytes, or the host's."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil

    return psutil.virtual_memory().available


def rows_that_fit(model: torch.nn.Module, length: int, device: torch.device,
                  all_logits: bool = False) -> int:
    """Rows of `length` tokens one batch of `model` may hold on `device` now."""
    itemsize = next(model.parameters()).element_size()
    return rows_for(model.config, itemsize, length, free_bytes(device), device.type == "cuda",
                    all_logits)
