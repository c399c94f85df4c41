"""Models and tokenizers: the embedded small Llama, or any causal LM from a path.

The embedded default exists because nothing can be downloaded where pit is
tested: a byte-level BPE tokenizer is trained on the world's own text and a
small Llama-architecture model is built from config, so the same code path
(`AutoModelForCausalLM`, safetensors, `save_pretrained`) serves a 135M Hub
model or a 7B checkpoint in S3.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from pit.config import ModelConfig
from pit.errors import ConfigError, ModelNotFoundError

transformers.utils.logging.disable_progress_bar()

BOS, EOS, PAD = "<bos>", "<eos>", "<pad>"


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer: exact round trips, so answers decode as they were written."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD
    )


def build_embedded_model(cfg: ModelConfig, tokenizer: PreTrainedTokenizerFast, seed: int = 0):
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_seq_len,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def _is_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def resolve_model_path(name_or_path: str, cache_dir: str | Path | None = None) -> str:
    """Turn a model reference into something `from_pretrained` can read.

    Local folders and Hub ids pass through; `s3://` URIs are downloaded once
    through the storage module into `cache_dir`.
    """
    if name_or_path.startswith("s3://"):
        from pit import storage

        return str(storage.fetch_model(name_or_path, cache_dir))
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelNotFoundError(
                f"model path {name_or_path} is a file; pass the folder that holds config.json "
                "(and model.safetensors or a .gguf file with model.gguf_file)"
            )
        return str(path)
    if _is_hub_id(name_or_path):
        return name_or_path
    raise ModelNotFoundError(
        f"model {name_or_path!r} not found: no such folder, and not a Hugging Face id "
        "(owner/name) or an s3:// URI. Check the path, or use model.name_or_path=embedded."
    )


def load_model(
    path: str | Path, cfg: ModelConfig | None = None, device: str | torch.device = "cpu"
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Load a causal LM and its tokenizer, safetensors only, remote code off unless asked."""
    cfg = cfg or ModelConfig()
    ref = resolve_model_path(str(path))
    kwargs: dict = {"trust_remote_code": cfg.trust_remote_code}
    if cfg.gguf_file:
        kwargs["gguf_file"] = cfg.gguf_file
    else:
        kwargs["use_safetensors"] = True
    dtype = getattr(torch, cfg.dtype)
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(ref, dtype=dtype, **kwargs)
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
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.bos_token is None:
        tokenizer.bos_token = tokenizer.eos_token
    return model.to(device), tokenizer


def save_model(model: PreTrainedModel, tokenizer, path: str | Path) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path
