"""The `build_dataset` flow: one smoke run per runner, and the parameters it shares with the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from real_data import ENWIKI_FILMS

from flows.build_dataset import BuildDatasetParams, build_dataset
from pit.cli import app
from pit.errors import ConfigError

FIXTURE = ENWIKI_FILMS
DUMP = FIXTURE / "enwikifilms-20220801-pages-articles-multistream.xml.bz2"
INDEX = FIXTURE / "enwikifilms-20220801-pages-articles-multistream-index.txt.bz2"


# The session-wide Prefect test server from tests/services.py, shared with other flow tests.
pytestmark = pytest.mark.usefixtures("prefect_harness")


def _docs(out: Path) -> list[tuple[int, str]]:
    rows = [json.loads(x) for x in (out / "docs.jsonl").read_text().splitlines()]
    return [(r["page_id"], r["text"]) for r in rows]


def test_process_and_dask_runners_publish_the_same_data_set(tmp_path):
    common = {
        "dump": str(DUMP),
        "index": str(INDEX),
        "category": r"^\d{4} films$",
        "chunk_mb": 0.05,
    }
    local = build_dataset(BuildDatasetParams(out=str(tmp_path / "local"), workers=2, **common))
    pytest.importorskip("prefect_dask")
    dask = build_dataset(
        BuildDatasetParams(out=str(tmp_path / "dask"), runner="dask", dask_workers=2, **common)
    )
    assert local["counts"]["docs"] == dask["counts"]["docs"] == 31
    assert local["fingerprint"] == dask["fingerprint"]
    assert _docs(tmp_path / "local") == _docs(tmp_path / "dask")


def test_flow_parameters_are_checked_before_any_work(tmp_path):
    params = BuildDatasetParams(
        dump=str(tmp_path / "no-such-pages-articles.xml.bz2"),
        category="(",
        out=str(tmp_path / "o"),
        llm_base_url="http://127.0.0.1:9/v1",
    )
    with pytest.raises(ConfigError) as err:
        build_dataset(params)
    assert len(err.value.problems) == 3
    assert "does not exist" in str(err.value) and "--llm-model" in str(err.value)
    assert not (tmp_path / "o").exists()


def test_the_cli_and_the_flow_offer_the_same_described_options():
    command = typer.main.get_command(app).commands["data"].commands["wiki"]
    options = {p.name: p for p in command.params}
    assert set(options) == set(BuildDatasetParams.model_fields)
    for name, field in BuildDatasetParams.model_fields.items():
        assert field.description, name
        assert field.description in options[name].help, name
        if not field.is_required() and name not in ("domains", "namespaces"):
            assert options[name].default == field.default, name
    # The Prefect UI renders this schema as the flow's form: every field described.
    schema = build_dataset.parameters.model_dump()["definitions"]["BuildDatasetParams"]
    assert set(schema["properties"]) == set(BuildDatasetParams.model_fields)
    assert all(p.get("description") for p in schema["properties"].values())
