"""Secrets stay secret, and model files cannot run code.

A comparison runs with its artifacts in S3 and the AWS secret key set to a
marker string; the training stage's own process inherits it and uses it.
Then every place a secret could leak to is read back and searched for the
marker: log records, the CLI's and the training process's output, MLflow
params, tags, metrics and artifact files, Prefect artifacts, flow-run
parameters and the logs the Prefect API stored, and every file left in the
work directory.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from prefect.client.orchestration import get_client
from s3server import SECRET_MARKER
from transformers import LlamaConfig, LlamaForCausalLM
from typer.testing import CliRunner

from pit.cli import app
from pit.errors import ConfigError, ModelNotFoundError
from pit.modeling import load_model, save_model, train_tokenizer


def mlflow_text(client: MlflowClient, experiment: str, tmp: Path) -> list[str]:
    """Every param, tag and metric name of the experiment's runs, and every artifact's bytes."""
    exp = client.get_experiment_by_name(experiment)
    texts = []
    for run in client.search_runs([exp.experiment_id]):
        texts.append(json.dumps([run.data.params, run.data.tags, list(run.data.metrics)]))
        todo = [None]
        while todo:
            for item in client.list_artifacts(run.info.run_id, todo.pop()):
                if item.is_dir:
                    todo.append(item.path)
                else:
                    local = client.download_artifacts(run.info.run_id, item.path, str(tmp))
                    texts.append(Path(local).read_bytes().decode("utf-8", "replace"))
    assert len(texts) > 3
    return texts


def prefect_text() -> list[str]:
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts()
        flow_runs = client.read_flow_runs()
        logs = client.read_logs()
    assert artifacts, "the run-stage task publishes a Prefect artifact"
    return ([json.dumps([a.key, a.description, a.data], default=str) for a in artifacts]
            + [json.dumps(r.parameters, default=str) for r in flow_runs]
            + [entry.message for entry in logs])


@pytest.mark.slow
@pytest.mark.integration
def test_the_secret_key_appears_in_no_log_mlflow_record_prefect_artifact_or_file(
        s3_bucket, s3_env, mlflow_server, prefect_harness, tiny_overrides, tmp_path,
        monkeypatch, caplog, capfd):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="pit")
    work = tmp_path / "work"
    args = ["compare", "--preset", "smoke", "--methods", "cpt", "--artifact-root",
            f"{s3_bucket}/pit", "--set", f"workdir={work}", "--set",
            "tracking.experiment=secrets", "--results", str(work / "r.json"),
            "--set", "train.launcher=process"]
    for o in tiny_overrides:
        args += ["--set", o]
    ok = CliRunner().invoke(app, args)
    assert ok.exit_code == 0, ok.output + repr(ok.exception)
    doc = json.loads((work / "r.json").read_text())
    run = MlflowClient(mlflow_server.url).get_run(doc["methods"]["cpt"]["mlflow_run_id"])
    assert run.data.tags["pit.stage0.model"].startswith(f"{s3_bucket}/pit/stages/")

    failed = CliRunner().invoke(app, ["compare", "--preset", "smoke", "--methods", "cpt",
                                      "--artifact-root", "s3://pit-no-such-bucket/x",
                                      "--set", f"workdir={tmp_path / 'failed'}",
                                      "--set", "tracking.experiment=secrets"])
    assert failed.exit_code == 2 and "does not exist" in failed.output

    captured = capfd.readouterr()
    haystacks = {
        "log records": [r.getMessage() for r in caplog.records]
        + [repr(r.args) for r in caplog.records] + [str(r.exc_info) for r in caplog.records],
        "CLI output": [ok.output, failed.output],
        "process output": [captured.out, captured.err],
        "MLflow": mlflow_text(MlflowClient(mlflow_server.url), "secrets", tmp_path / "dl"),
        "Prefect": prefect_text(),
        "work files": [p.read_bytes().decode("utf-8", "replace")
                       for p in work.rglob("*") if p.is_file()],
    }
    assert "cpt stage 0 (seed 0)" in ok.output, "the training process's log reached the CLI"
    for where, texts in haystacks.items():
        leaks = [t for t in texts if SECRET_MARKER in t]
        assert not leaks, f"the secret key leaked into {where}: {leaks[0][:300]}"


# -- model files run no code -----------------------------------------------------------------


@pytest.fixture
def small_model(tmp_path) -> tuple[LlamaForCausalLM, object]:
    tok = train_tokenizer(["the film was directed by someone"] * 20, 300)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2))
    return model, tok


def test_pickled_weights_are_never_loaded(small_model, tmp_path):
    model, tok = small_model
    folder = tmp_path / "pickled"
    folder.mkdir()
    model.config.save_pretrained(folder)
    tok.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(ModelNotFoundError, match="no file named model.safetensors"):
        load_model(folder)


def test_code_shipped_with_a_model_does_not_run_unless_the_config_allows_it(
        small_model, tmp_path):
    model, tok = small_model
    folder = save_model(model, tok, tmp_path / "custom")
    ran = tmp_path / "code-ran"
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = "pit-custom"
    cfg["auto_map"] = {"AutoConfig": "custom.CustomConfig",
                       "AutoModelForCausalLM": "custom.CustomModel"}
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "custom.py").write_text(
        f"import pathlib\npathlib.Path({str(ran)!r}).write_text('ran')\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n"
        "class CustomConfig(LlamaConfig):\n    model_type = 'pit-custom'\n"
        "class CustomModel(LlamaForCausalLM):\n    config_class = CustomConfig\n"
    )
    with pytest.raises(ConfigError) as e:
        load_model(folder)
    assert ("ships its own Python code, which pit does not run unless you set "
            "model.trust_remote_code=true") in str(e.value)
    assert not ran.exists()
