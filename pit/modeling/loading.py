"""Loading and saving causal LMs: safetensors only, the tokenizer that comes with the model.

pit's data layer frames every example with the tokenizer's own `<bos>` and
`<eos>` and pads batches with its pad token, so those three are taken from
the model and filled in where a model lacks them (see :func:`special_tokens`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from pit.config import ModelConfig
from pit.errors import ConfigError, ModelNotFoundError
from pit.modeling.gguf import load_gguf, require_gguf
from pit.modeling.reference import ModelRef, check_folder, parse_model_ref, saved_from_gguf

transformers.utils.logging.disable_progress_bar()


def special_tokens(tokenizer, name: str):
    """Give a tokenizer the `<bos>`, `<eos>` and pad tokens pit frames examples with.

    A missing pad token becomes `<eos>`: padding carries no loss and is
    masked from attention, so its id never matters. A missing `<bos>` also
    becomes `<eos>`, the token such models (GPT-2, Qwen) were trained to see
    between documents, hence before each one. A missing `<eos>` cannot be
    made up: answers end with it, and generation stops at it.
    """
    if tokenizer.eos_token is None:
        raise ConfigError(
            [f"model.name_or_path: the tokenizer of {name!r} defines no end-of-sequence token, "
             "which pit puts after every answer and stops generation at; use a causal LM "
             "whose tokenizer has one"],
            source="model config",
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.bos_token is None:
        tokenizer.bos_token = tokenizer.eos_token
    return tokenizer


def _local_ref(name: str, cfg: ModelConfig, cache_dir: str | os.PathLike[str] | None) -> ModelRef:
    """The reference as something on this machine or the Hub; s3 folders are fetched first.

    `cfg.gguf_file` applies only where that file is: a folder pit saved from
    a GGUF model (every stage output) loads as safetensors.
    """
    ref = parse_model_ref(name, cfg.gguf_file)
    if saved_from_gguf(ref):
        ref = dataclasses.replace(ref, gguf_file=None)
    if ref.gguf_file:
        require_gguf(ref.gguf_file)
    if ref.kind == "s3":
        from pit.storage import fetch_model

        ref = ModelRef("folder", str(fetch_model(ref.location, cache_dir)), ref.gguf_file)
        if saved_from_gguf(ref):
            ref = dataclasses.replace(ref, gguf_file=None)
    if ref.kind == "folder":
        check_folder(ref)
    return ref


def load_model(
    path: str | Path,
    cfg: ModelConfig | None = None,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[PreTrainedModel, object]:
    """Load a causal LM and its tokenizer: safetensors only, remote code off unless asked.

    `path` is a model reference (see `pit.modeling.reference`) or a folder
    pit saved. A GGUF model comes back with float weights and no quantizer
    attached, so it trains, checkpoints and saves like any other model. An
    `s3://` model is copied into `cache_dir` first (see `pit.storage.fetch_model`).
    """
    cfg = cfg or ModelConfig()
    ref = _local_ref(str(path), cfg, cache_dir)
    dtype = getattr(torch, cfg.dtype)
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    try:
        if ref.gguf_file:
            model, tokenizer = load_gguf(ref.location, ref.gguf_file, dtype,
                                         cfg.trust_remote_code)
        else:
            kwargs = {"trust_remote_code": cfg.trust_remote_code, "use_safetensors": True}
            tokenizer = AutoTokenizer.from_pretrained(ref.location, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(ref.location, dtype=dtype, **kwargs)
    except ValueError as e:
        if "trust_remote_code" not in str(e) or cfg.trust_remote_code:
            raise
        raise ConfigError(
            [f"model.name_or_path: {str(path)!r} ships its own Python code, which pit does not "
             "run unless you set model.trust_remote_code=true (read that code first)"],
            source="model config",
        ) from None
    except OSError as e:
        hint = " (HF_HUB_OFFLINE=1 is set: only the local cache is searched)" if offline else ""
        raise ModelNotFoundError(
            f"could not load model {str(path)!r}{hint}: {e}. Pass a folder with config.json and "
            "model.safetensors, a reachable Hugging Face id, or an s3:// URI."
        ) from e
    return model.to(device), special_tokens(tokenizer, str(path))


FLASH = {"flash_attention_2": "is_flash_attn_2_available",
         "flash_attention_3": "is_flash_attn_3_available"}


def use_attention(model: PreTrainedModel, implementation: str) -> PreTrainedModel:
    """Switch a loaded model to an attention kernel (`train.attention`), checked first.

    Flash attention needs a CUDA GPU and its package; without them the error
    says so before any work, rather than transformers' failing mid-stage.
    """
    if implementation in FLASH:
        available = getattr(transformers.utils, FLASH[implementation])()
        if not torch.cuda.is_available() or not available:
            missing = "a CUDA GPU" if not torch.cuda.is_available() else "the flash-attn package"
            raise ConfigError(
                [f"train.attention={implementation} needs {missing}; install flash-attn on a "
                 "CUDA machine, or set train.attention=sdpa"],
                source="train config",
            )
    if model.config._attn_implementation != implementation:
        model.set_attn_implementation(implementation)
    return model


def save_model(model: PreTrainedModel, tokenizer, path: str | Path,
               state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write a model (safetensors) and its tokenizer into a folder `load_model` reads back.

    `state_dict` replaces the model's own where its weights are sharded
    across processes (FSDP): the gathered full weights.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True, state_dict=state_dict)
    tokenizer.save_pretrained(path)
    return path
