import pytest

from pit.config_sources import load_config, parse_overrides, preset_names
from pit.data.world import build_world
from pit.errors import ConfigError


def test_presets_ship_smoke_and_demo_and_validate():
    assert {"smoke", "demo"} <= set(preset_names())
    for name in preset_names():
        assert load_config(name).preset == name


def test_the_gpu_preset_is_the_demo_at_the_next_scale():
    import torch

    from pit.base import _tokenizer_texts
    from pit.modeling import build_embedded_model, train_tokenizer

    gpu, demo = load_config("gpu"), load_config("demo")
    assert gpu.world.n_test == 3 * demo.world.n_test and gpu.world.n_train == 3 * demo.world.n_train
    assert gpu.train.test_doc_epochs == demo.train.test_doc_epochs
    assert gpu.train.pit_epochs == demo.train.pit_epochs
    assert not gpu.checkpoint.enabled
    tok = train_tokenizer(_tokenizer_texts(build_world(gpu.world)), gpu.model.vocab_size)
    assert len(tok) < gpu.model.vocab_size  # the whole lexicon fits: a name is a token or two
    with torch.device("meta"):
        params = sum(p.numel() for p in build_embedded_model(gpu.model, tok).parameters())
    assert 80e6 < params < 120e6


def test_set_overrides_any_field_with_yaml_typed_values():
    cfg = load_config("smoke", overrides=["world.seed=3", "train.doc_lr=5e-4",
                                          "train.cross_domain=true", "methods=[pit, cpt]"])
    assert cfg.world.seed == 3
    assert cfg.train.doc_lr == 5e-4
    assert cfg.train.cross_domain is True
    assert cfg.methods == ["pit", "cpt"]


def test_every_config_problem_is_reported_at_once_with_its_path():
    with pytest.raises(ConfigError) as err:
        load_config("smoke", overrides=["world.sed=3", "model.dtype=float8", "train.doc_lr=-1"])
    text = str(err.value)
    assert "world.sed: unknown field; allowed here: seed, n_old" in text
    assert "model.dtype" in text and "float8" in text and "'bfloat16'" in text
    assert "train.doc_lr" in text and "greater than 0" in text
    assert len(err.value.problems) == 3


def test_bad_override_syntax_and_unknown_preset_say_what_to_write():
    with pytest.raises(ConfigError, match="expected section.field=value"):
        parse_overrides(["world.seed"])
    with pytest.raises(ConfigError, match="unknown preset 'tiny'; shipped presets: .*smoke"):
        load_config("tiny")


def test_config_file_with_invalid_yaml_is_named(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("world: [unclosed\n")
    with pytest.raises(ConfigError, match=r"(?s)c\.yaml.*not valid YAML"):
        load_config(config_file=bad)


def test_world_is_deterministic_by_seed():
    cfg = load_config("smoke").world
    a, b = build_world(cfg), build_world(cfg)
    c = build_world(cfg.model_copy(update={"seed": 1}))
    assert a.fingerprint == b.fingerprint
    assert a.fingerprint != c.fingerprint


def test_world_has_the_splits_domains_and_attributes_the_paper_needs():
    cfg = load_config("smoke", overrides=["world.paraphrases=3"]).world
    ds = build_world(cfg)
    assert {d["split"] for d in ds.docs} == {"old", "train", "test"}
    assert ds.domains == ["films", "novels"]
    assert len(ds.docs_where("test", "films")) == cfg.n_test * 3
    from pit.data.world import FILM_FACTS

    assert len(FILM_FACTS) >= 10
    for q in ds.qa:
        title = next(d["title"] for d in ds.docs if d["entity_id"] == q["entity_id"])
        assert title in q["question"]
        doc = next(d["text"] for d in ds.docs if d["doc_id"] == q["doc_id"])
        assert q["answers"][0] in doc
    test_titles = {d["title"] for d in ds.docs_where("test")}
    old_text = " ".join(d["text"] for d in ds.docs_where("old"))
    assert not any(t in old_text for t in test_titles)


def test_saved_dataset_loads_back_identical(tmp_path):
    ds = build_world(load_config("smoke").world)
    ds.save(tmp_path / "w")
    from pit.data import KnowledgeDataset

    again = KnowledgeDataset.load(tmp_path / "w")
    assert again.fingerprint == ds.fingerprint
    assert (tmp_path / "w" / "docs.jsonl").exists()


def test_the_storage_section_takes_the_fields_error_messages_name():
    cfg = load_config("smoke", overrides=["storage.endpoint_url=http://127.0.0.1:9000",
                                          "storage.max_attempts=2"])
    from pit.artifacts import store_for

    assert store_for(cfg).config.resolved_endpoint() == "http://127.0.0.1:9000"
    with pytest.raises(ConfigError, match="storage.endpoint_url"):
        load_config("smoke", overrides=["storage.endpoint_url=127.0.0.1:9000"])


def test_the_compare_form_sets_data_model_and_artifact_root_as_given():
    from flows.compare import CompareParams

    cfg = CompareParams(data="yes", model="123", artifact_root="s3://b/it's",
                        overrides=["data.source=ignored"]).config()
    assert cfg.data.source == "yes" and cfg.model.name_or_path == "123"
    assert cfg.storage.root == "s3://b/it's"
    assert CompareParams().config().data.source == "synthetic"
