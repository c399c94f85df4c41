"""Model references are checked before any work; any tokenizer gets the tokens pit frames with."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pit.config import ModelConfig
from pit.errors import ConfigError, ModelNotFoundError
from pit.modeling import (
    ModelRef,
    build_embedded_model,
    check_model,
    load_model,
    model_identity,
    parse_model_ref,
    save_model,
    train_tokenizer,
)
from pit.storage import StorageConfig, Store, file_sha256
from pit.train.examples import ExampleBuilder

ROOT = Path(__file__).resolve().parents[1]
TINY = ModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tok = train_tokenizer(["a tiny corpus of words", "Question: who? Answer: me"], 120)
    folder = tmp_path_factory.mktemp("model")
    return save_model(build_embedded_model(TINY, tok), tok, folder)


def gguf_folder(tmp_path: Path, *names: str) -> Path:
    """A folder with files named like GGUF models; check_model never reads them."""
    for name in names:
        (tmp_path / name).write_bytes(b"GGUF not really")
    return tmp_path


def test_each_kind_of_reference_parses_to_where_it_points(tmp_path: Path, saved_model: Path):
    gguf_folder(tmp_path, "m.gguf")
    assert parse_model_ref(str(saved_model)) == ModelRef("folder", str(saved_model))
    assert parse_model_ref(str(tmp_path / "m.gguf")) == ModelRef("folder", str(tmp_path), "m.gguf")
    assert parse_model_ref("HuggingFaceTB/SmolLM2-135M", "x.gguf") == \
        ModelRef("hub", "HuggingFaceTB/SmolLM2-135M", "x.gguf")
    assert parse_model_ref("s3://bucket/models/m/") == ModelRef("s3", "s3://bucket/models/m")
    assert parse_model_ref("s3://bucket/models/m/q4.gguf") == \
        ModelRef("s3", "s3://bucket/models/m", "q4.gguf")


def test_good_references_pass_the_check_without_loading(tmp_path: Path, saved_model: Path):
    gguf_folder(tmp_path, "m.gguf")
    for cfg in (
        ModelConfig(),
        ModelConfig(name_or_path=str(saved_model)),
        ModelConfig(name_or_path=str(tmp_path), gguf_file="m.gguf"),
        ModelConfig(name_or_path=str(tmp_path / "m.gguf")),
        ModelConfig(name_or_path="HuggingFaceTB/SmolLM2-135M"),
        ModelConfig(name_or_path="s3://bucket/models/m"),
    ):
        check_model(cfg)


@pytest.mark.parametrize(("setup", "error", "message"), [
    (lambda d: ModelConfig(name_or_path=str(d / "missing")), ModelNotFoundError,
     "not found: no such folder, and not a Hugging Face id"),
    (lambda d: ModelConfig(name_or_path="s3:///models/m"), ModelNotFoundError,
     "names no bucket; use s3://bucket/path/to/model-folder"),
    (lambda d: ModelConfig(name_or_path=str(gguf_folder(d, "a.gguf", "b.gguf"))),
     ModelNotFoundError, "has no config.json. It holds the GGUF file(s) a.gguf, b.gguf: "
                         "set model.gguf_file=a.gguf"),
    (lambda d: ModelConfig(name_or_path=str(gguf_folder(d, "a.gguf")), gguf_file="q8.gguf"),
     ModelNotFoundError, "model.gguf_file 'q8.gguf' is not in that folder (the GGUF files "
                         "there: a.gguf)"),
    (lambda d: ModelConfig(name_or_path=str(gguf_folder(d, "a.gguf") / "a.gguf"),
                           gguf_file="b.gguf"),
     ConfigError, "names the GGUF file 'a.gguf' but model.gguf_file says 'b.gguf'"),
    (lambda d: ModelConfig(gguf_file="a.gguf"), ConfigError,
     "model.gguf_file='a.gguf' is set but model.name_or_path is 'embedded'"),
])
def test_bad_references_fail_the_check_with_the_fix(tmp_path, setup, error, message):
    with pytest.raises(error) as e:
        check_model(setup(tmp_path))
    assert message in str(e.value)


def test_a_folder_without_safetensors_weights_is_refused_up_front(tmp_path, saved_model):
    (tmp_path / "config.json").write_bytes((saved_model / "config.json").read_bytes())
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickled")
    with pytest.raises(ModelNotFoundError, match="no file named model.safetensors. pit loads "
                                                 "safetensors weights only"):
        check_model(ModelConfig(name_or_path=str(tmp_path)))


def test_a_model_saved_from_a_gguf_one_loads_as_safetensors_whatever_gguf_file_says(saved_model):
    cfg = ModelConfig(name_or_path="/elsewhere/original", gguf_file="q4.gguf")
    model, tok = load_model(saved_model, cfg)
    assert model.config.model_type == "llama" and tok.eos_token == "<eos>"


BLOCK_GGUF = """
import importlib.abc, sys

class NoGguf(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "gguf" or name.startswith("gguf."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoGguf())
"""

WITHOUT_GGUF = BLOCK_GGUF + """
from pit.config import ModelConfig
from pit.errors import PitError
from pit.modeling import check_model, load_model

opened = []
sys.addaudithook(lambda event, args: event == "open" and str(args[0]).endswith(".gguf")
                 and opened.append(args[0]))
cfg = ModelConfig(name_or_path=sys.argv[1], gguf_file="model.gguf")
for step in (lambda: check_model(cfg), lambda: load_model(cfg.name_or_path, cfg)):
    try:
        step()
        print("no error")
    except PitError as e:
        print(type(e).__name__, "|", " ".join(str(e).split()))
print("gguf files opened:", opened)
"""


def test_without_the_gguf_package_a_gguf_model_fails_at_once_naming_the_install(tmp_path):
    folder = gguf_folder(tmp_path, "model.gguf")
    check_model(ModelConfig(name_or_path=str(folder), gguf_file="model.gguf"))  # gguf is here
    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(WITHOUT_GGUF), str(folder)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    expected = ("ConfigError | invalid model config: - model.gguf_file: model.gguf is a GGUF "
                "file, and reading GGUF files needs the Python package `gguf`, which is not "
                "installed. Install it with `pip install 'gguf>=0.10'`, or convert the model to "
                "safetensors and pass its folder as model.name_or_path without model.gguf_file.")
    assert lines[0] == expected  # check_model
    assert lines[1] == expected  # load_model, before reading a byte of the file
    assert lines[2] == "gguf files opened: []"


def test_a_tokenizer_without_pad_or_bos_borrows_eos_and_one_without_eos_is_refused(tmp_path):
    from transformers import PreTrainedTokenizerFast

    full = train_tokenizer(["Question: who directed it? Answer: Ventura Pons"], 150)
    only_eos = PreTrainedTokenizerFast(tokenizer_object=full.backend_tokenizer, eos_token="<eos>")
    assert only_eos.pad_token is None and only_eos.bos_token is None
    folder = save_model(build_embedded_model(TINY, full), only_eos, tmp_path / "no-pad")
    _, tok = load_model(folder)
    assert tok.pad_token == tok.bos_token == tok.eos_token == "<eos>"
    example = ExampleBuilder(tok, 64).qa("Who directed it?", "Ventura Pons")
    assert example.input_ids[0] == example.input_ids[-1] == tok.eos_token_id

    no_eos = PreTrainedTokenizerFast(tokenizer_object=full.backend_tokenizer)
    folder = save_model(build_embedded_model(TINY, full), no_eos, tmp_path / "no-eos")
    with pytest.raises(ConfigError, match="defines no end-of-sequence token"):
        load_model(folder)


def test_a_model_left_marked_as_gguf_quantized_is_made_serialisable(tmp_path, saved_model):
    """The state transformers leaves after unpacking GGUF weights without being asked to."""
    from transformers import GgufConfig
    from transformers.quantizers.quantizer_gguf import GgufHfQuantizer

    from pit.modeling import detach_quantizer

    model, tok = load_model(saved_model)
    model.hf_quantizer = GgufHfQuantizer(GgufConfig(gguf_file="m.gguf"))
    model.config.quantization_config = model.hf_quantizer.quantization_config
    with pytest.raises(ValueError, match="quantized with gguf and is not serializable"):
        model.save_pretrained(tmp_path / "refused")
    folder = save_model(detach_quantizer(model, "m.gguf"), tok, tmp_path / "saved")
    assert "quantization_config" not in (folder / "config.json").read_text()
    load_model(folder)


@pytest.mark.integration
def test_a_model_is_identified_by_the_files_loading_reads_wherever_it_is(
        tmp_path: Path, saved_model: Path, s3_bucket: str):
    local = model_identity(parse_model_ref(str(saved_model)))
    assert set(local["files"]) == {p.name for p in saved_model.iterdir()}
    assert local["files"]["model.safetensors"] == file_sha256(saved_model / "model.safetensors")

    store = Store(StorageConfig(root=f"{s3_bucket}/models"))
    store.publish(saved_model, "published")
    store.put_dir(saved_model, "by-hand")
    assert model_identity(parse_model_ref(f"{s3_bucket}/models/published")) == local
    by_hand = model_identity(parse_model_ref(f"{s3_bucket}/models/by-hand"))
    assert by_hand == {"sizes": {p.name: p.stat().st_size for p in saved_model.iterdir()}}
    with pytest.raises(ModelNotFoundError, match="nothing is stored under it"):
        model_identity(parse_model_ref(f"{s3_bucket}/models/missing"))

    gguf_folder(tmp_path, "a.gguf", "b.gguf")
    assert model_identity(parse_model_ref(str(tmp_path / "a.gguf"))) == \
        {"files": {"a.gguf": file_sha256(tmp_path / "a.gguf")}}
    assert model_identity(parse_model_ref("owner/name", "q4.gguf")) == \
        {"hub": "owner/name", "gguf_file": "q4.gguf"}
