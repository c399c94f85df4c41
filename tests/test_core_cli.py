"""The CLI's contract with newcomers: help that explains, errors that name the fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pit.cli import app

runner = CliRunner()


def test_help_lists_the_commands_a_newcomer_needs():
    out = runner.invoke(app, ["--help"])
    assert out.exit_code == 0
    for cmd in ("demo", "compare", "data", "recipes"):
        assert cmd in out.output
    out = runner.invoke(app, ["compare", "--help"])
    assert "--set" in out.output and "section.field=value" in out.output
    assert "--data" in out.output and "--model" in out.output


def test_invalid_config_field_fails_before_any_work(tmp_path):
    out = runner.invoke(app, ["compare", "--preset", "smoke", "--set", "world.sed=3",
                              "--set", f"workdir={tmp_path}"])
    assert out.exit_code == 2
    assert "world.sed: unknown field; allowed here: seed" in out.output
    assert not (tmp_path / "mlflow.db").exists()


def test_unknown_recipe_lists_the_known_ones(tmp_path):
    out = runner.invoke(app, ["compare", "--preset", "smoke", "--methods", "pit,pitt",
                              "--set", f"workdir={tmp_path}"])
    assert out.exit_code == 2
    assert "unknown recipe 'pitt'" in out.output and "pit++" in out.output


def test_missing_model_path_is_named_with_the_fix(tmp_path):
    missing = tmp_path / "no-such-model"
    out = runner.invoke(app, ["compare", "--preset", "smoke", "--methods", "pit",
                              "--set", f"model.name_or_path={missing}",
                              "--set", f"workdir={tmp_path}"])
    assert out.exit_code == 2
    assert str(missing) in out.output and "model.name_or_path=embedded" in out.output


def test_recipes_command_shows_stages_and_paper_figures():
    out = runner.invoke(app, ["recipes"])
    assert out.exit_code == 0
    assert "train_qa + train_docs" in out.output and "45.4" in out.output


def test_data_synth_writes_a_dataset_with_its_card(tmp_path):
    out = runner.invoke(app, ["data", "synth", "--preset", "smoke", "--out",
                              str(tmp_path / "w"), "--set", "world.seed=5"])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "w" / "docs.jsonl").exists() and (tmp_path / "w" / "card.json").exists()
    assert not (tmp_path / "w.partial").exists()


@pytest.mark.slow
def test_compare_prints_pits_own_output_not_prefects_info_logs(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "MLFLOW_TRACKING"))}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    out = subprocess.run(
        [str(Path(sys.executable).with_name("pit")), "compare", "--preset", "smoke",
         "--methods", "closed-book", "--set", f"workdir={tmp_path}"],
        env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "closed-book" in out.stdout
    assert "| INFO" not in out.stdout + out.stderr  # Prefect's
    assert " INFO mlflow" not in out.stdout + out.stderr
