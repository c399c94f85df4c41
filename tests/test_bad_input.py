"""Bad input and outages: each gives one clear message naming the input and the fix.

The CLI is what users run, so most cases go through `pit compare` and check
its exit status (2) and what it prints; where the CLI adds nothing (a model
reference, a damaged checkpoint), the library call is tested directly.
"""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pit import pipeline
from pit.artifacts import store_for
from pit.cli import app
from pit.config_sources import load_config
from pit.data.dataset import KnowledgeDataset
from pit.errors import ConfigError, ModelNotFoundError, UnknownRecipeError
from pit.keys import stage_output
from pit.modeling import load_model
from pit.recipe import select_recipes
from pit.storage import MANIFEST, Store
from pit.train.checkpoint import checkpoint_key, list_checkpoints, step_of


def flat(text: str) -> str:
    """Console output with rich's line wrapping undone."""
    return " ".join(text.split())


def run_cli(*args: str) -> tuple[int, str]:
    out = CliRunner().invoke(app, list(args))
    if out.exception and not isinstance(out.exception, SystemExit):
        raise out.exception
    return out.exit_code, flat(out.output)


# -- models ----------------------------------------------------------------------------------


def test_a_missing_model_folder_is_named_with_the_fix(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelNotFoundError) as e:
        load_model(missing)
    assert str(e.value) == (
        f"model {str(missing)!r} not found: no such folder, and not a Hugging Face id "
        "(owner/name) or an s3:// URI. Check the path, or use model.name_or_path=embedded."
    )


def test_a_model_file_instead_of_its_folder_is_refused(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match="is a file; pass the folder that holds"):
        load_model(weights)


def test_an_unknown_hub_id_names_the_id_and_offline_mode(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as e:
        load_model("pit-tests/no-such-model")
    msg = str(e.value)
    assert msg.startswith("could not load model 'pit-tests/no-such-model' (HF_HUB_OFFLINE=1 is "
                          "set: only the local cache is searched)")
    assert msg.endswith("Pass a folder with config.json and model.safetensors, a reachable "
                        "Hugging Face id, or an s3:// URI.")


@pytest.mark.integration
def test_a_missing_model_in_s3_is_named_with_the_fix(s3_bucket, tmp_path):
    url = f"{s3_bucket}/models/not-there"
    with pytest.raises(ModelNotFoundError) as e:
        load_model(url)
    assert str(e.value) == (
        f"model {url} not found: there is no {MANIFEST} or config.json under it. Check the URI "
        "(a folder holding config.json and model.safetensors), or use a local folder or a "
        "Hugging Face id."
    )


@pytest.mark.slow
@pytest.mark.integration
def test_pit_compare_with_a_missing_model_fails_once_with_the_message(
        tmp_path, prefect_harness, tiny_overrides):
    missing = tmp_path / "nowhere"
    args = ["compare", "--preset", "smoke", "--methods", "cpt", "--set", f"workdir={tmp_path}",
            "--set", f"model.name_or_path={missing}"]
    for o in tiny_overrides:
        args += ["--set", o]
    code, out = run_cli(*args)
    assert code == 2
    assert f"error: model '{missing}' not found: no such folder" in out


@pytest.mark.slow
@pytest.mark.integration
def test_a_data_set_without_what_the_recipes_need_fails_before_any_training(
        tmp_path, prefect_harness, tiny_overrides):
    from pit.data.views import training_view
    from pit.data.world import build_world

    world = build_world(load_config("smoke", overrides=tiny_overrides).world)
    films = training_view(world, load_config("smoke").data, cross_domain=False)
    no_old = KnowledgeDataset(docs=[d for d in films.docs if d["split"] != "old"],
                              qa=[q for q in films.qa if q["split"] != "old"])
    no_old.save(tmp_path / "new-films")
    args = ["compare", "--preset", "smoke", "--methods", "cpt,pit", "--data",
            str(tmp_path / "new-films"), "--set", f"workdir={tmp_path}",
            "--set", "train.cross_domain=true"]
    for o in tiny_overrides:
        args += ["--set", o]
    code, out = run_cli(*args)
    assert code == 2
    assert f"error: data set {tmp_path / 'new-films'} lacks what cpt, pit need:" in out
    assert "train.cross_domain is on but the data set has one domain only" in out
    assert "no old split to pre-train the embedded model on; add earlier pages with " \
        "`pit data wiki --old-category REGEX`, or start from a pretrained model with --model" in out
    assert "no old split QA to measure retention on" in out
    assert not (tmp_path / "artifacts" / "models").exists()
    assert not (tmp_path / "mlflow.db").exists()


# -- recipes and configs ---------------------------------------------------------------------


def test_an_unknown_recipe_lists_the_known_ones():
    code, out = run_cli("compare", "--preset", "smoke", "--methods", "pit,pit+++")
    assert code == 2
    assert "error: unknown recipe 'pit+++'; known recipes:" in out
    assert "closed-book" in out and "pit++" in out and "weighted-cpt" in out
    assert "Add your own as a YAML file and pass --recipes-dir" in out
    with pytest.raises(UnknownRecipeError):
        select_recipes(["nope"])


def test_invalid_yaml_syntax_names_the_file_and_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  doc_lr: 0.001\n   qa_lr: 0.002\n")
    code, out = run_cli("compare", "--config", str(bad))
    assert code == 2
    assert f"error: invalid {bad}: - not valid YAML:" in out
    assert "line 3" in out


def test_invalid_config_values_give_the_field_path_and_the_allowed_values(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(textwrap.dedent("""\
        train:
          launcher: threads
          doc_lr: -1
        checkpoint:
          every: 10
        model:
          dtype: float8
    """))
    with pytest.raises(ConfigError) as e:
        load_config(None, cfg)
    problems = e.value.problems
    assert "train.launcher: Input should be 'process' or 'inline' (got 'threads')" in problems
    assert "train.doc_lr: Input should be greater than 0" in problems
    assert ("checkpoint.every: unknown field; allowed here: enabled, every_steps, at_epoch_end, "
            "keep_last") in problems
    assert ("model.dtype: Input should be 'float32', 'bfloat16' or 'float16' (got 'float8')"
            in problems)
    code, out = run_cli("compare", "--config", str(cfg))
    assert code == 2 and f"error: invalid {cfg}:" in out
    assert "checkpoint.every: unknown field; allowed here: enabled, every_steps" in out


def test_an_invalid_set_override_names_the_field():
    code, out = run_cli("compare", "--preset", "smoke", "--set", "checkpoint.keep_last=0")
    assert code == 2
    assert ("invalid preset smoke with --set overrides: - checkpoint.keep_last: Input should be "
            "greater than or equal to 1") in out


def test_an_invalid_recipe_file_names_the_stage_field_and_the_choices(tmp_path):
    (tmp_path / "mine.yaml").write_text(textwrap.dedent("""\
        slug: mine
        description: documents, then QA
        stages:
          - sources: [test_docs, wikipedia]
            arrangement: mixed
    """))
    code, out = run_cli("compare", "--preset", "smoke", "--methods", "mine",
                    "--recipes-dir", str(tmp_path))
    assert code == 2
    assert f"error: invalid recipe {tmp_path / 'mine.yaml'}:" in out
    assert ("stages.0.sources.1.name: Input should be 'train_qa', 'train_docs', 'test_docs', "
            "'old_docs', 'old_qa' or 'replay' (got 'wikipedia')") in out
    assert ("stages.0.arrangement: Input should be 'shuffled', 'interleaved' or 'grouped' "
            "(got 'mixed')") in out


# -- damaged checkpoints, at the stage level -------------------------------------------------


@pytest.mark.slow
def test_a_stage_skips_a_corrupt_and_an_unpublished_checkpoint_and_resumes_from_the_one_before(
        tmp_path, tiny_overrides, caplog):
    cfg = load_config("smoke", None, [*tiny_overrides, f"workdir={tmp_path}",
                                      "train.launcher=inline", "checkpoint.every_steps=1",
                                      "checkpoint.keep_last=4", "train.doc_batch_size=2"])
    data = pipeline.build_dataset(cfg)
    base = pipeline.build_base(cfg, data)
    recipe = select_recipes(["cpt"])[0]
    key, expected = pipeline.run_stage(cfg, recipe, 0, base, data, None)
    store = store_for(cfg)
    final = Path(store.url(key)) / "model.safetensors"
    expected_weights = final.read_bytes()
    fp = pipeline.load_dataset(cfg, data).fingerprint
    prefix = stage_output(cfg, recipe.stages[0], 0, base, fp, 0).checkpoints
    steps = [step_of(k) for k in list_checkpoints(store, prefix)]
    assert len(steps) == 4
    newest, second, third = (checkpoint_key(prefix, s) for s in steps[:-4:-1])
    store.rm(Store.join(newest, MANIFEST))
    corrupt = Path(store.url(second)) / "optimizer.safetensors"
    data_bytes = bytearray(corrupt.read_bytes())
    data_bytes[-1] ^= 0x55
    corrupt.write_bytes(bytes(data_bytes))
    store.rm(key)  # as if the process died before publishing the stage's model

    with caplog.at_level(logging.INFO, logger="pit"):
        key2, metrics = pipeline.run_stage(cfg, recipe, 0, base, data, None)
    assert key2 == key and metrics == expected
    assert final.read_bytes() == expected_weights
    text = caplog.text
    assert f"skipping checkpoint {store.url(newest)}: it has no {MANIFEST}" in text
    assert (f"skipping corrupt checkpoint {store.url(second)}: optimizer.safetensors does not "
            "match its size or sha256; using the one before it") in text
    assert f"resumes after step {step_of(third)}" in text


def test_a_stage_model_already_published_is_reused_not_retrained(tmp_path, tiny_overrides):
    cfg = load_config("smoke", None, [*tiny_overrides, f"workdir={tmp_path}",
                                      "train.launcher=inline"])
    recipe = select_recipes(["cpt"])[0]
    store = store_for(cfg)
    data = pipeline.build_dataset(cfg)
    fp = pipeline.load_dataset(cfg, data).fingerprint
    out = stage_output(cfg, recipe.stages[0], 0, "models/base-x", fp, 0)
    with store.staging(out.key, {"fingerprint": out.hash, "metrics": {"exact_match": 12.5}}) as f:
        (f / "model.safetensors").write_text("never read: the manifest decides")
    assert pipeline.run_stage(cfg, recipe, 0, "models/base-x", data, None) == (
        out.key, {"exact_match": 12.5})


# -- S3 outages and setup mistakes, through `pit compare --artifact-root s3://...` ----------


def compare_on_s3(root: str, work: Path, overrides: list[str]) -> tuple[int, str]:
    args = ["compare", "--preset", "smoke", "--methods", "cpt", "--artifact-root", root,
            "--set", f"workdir={work}"]
    for o in overrides:
        args += ["--set", o]
    return run_cli(*args)


@pytest.mark.slow
@pytest.mark.integration
def test_missing_s3_credentials_are_named_with_the_fix(
        s3_env, monkeypatch, tmp_path, prefect_harness, tiny_overrides):
    bucket = s3_env.create_bucket()
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    code, out = compare_on_s3(f"s3://{bucket}/pit", tmp_path, tiny_overrides)
    assert code == 2
    assert f"error: no AWS credentials found to reach bucket s3://{bucket} at s3://{bucket}/pit" \
        in out
    assert "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in out


@pytest.mark.slow
@pytest.mark.integration
def test_a_missing_bucket_is_named_with_the_command_that_creates_it(
        s3_env, tmp_path, prefect_harness, tiny_overrides):
    code, out = compare_on_s3("s3://pit-no-such-bucket/runs", tmp_path, tiny_overrides)
    assert code == 2
    assert (f"error: bucket 'pit-no-such-bucket' does not exist at s3://pit-no-such-bucket/runs "
            f"(endpoint {s3_env.endpoint_url}): create it with `aws s3 mb s3://pit-no-such-bucket "
            f"--endpoint-url {s3_env.endpoint_url}`") in out


@pytest.mark.slow
@pytest.mark.integration
def test_an_s3_endpoint_that_is_down_is_retried_then_named(
        s3_env, monkeypatch, dead_s3_endpoint, tmp_path, prefect_harness, tiny_overrides):
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead_s3_endpoint)
    code, out = compare_on_s3("s3://pit-bucket/runs", tmp_path, tiny_overrides)
    assert code == 2
    assert (f"error: cannot reach bucket s3://pit-bucket: the store at s3://pit-bucket/runs "
            f"(endpoint {dead_s3_endpoint}) failed 5 time(s)") in out
    assert "Is the S3 endpoint up? Set AWS_ENDPOINT_URL (or storage.endpoint_url)" in out

