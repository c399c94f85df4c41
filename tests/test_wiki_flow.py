"""The `build_dataset` flow: one smoke run per runner (local process pool, Dask LocalCluster)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from real_data import ENWIKI_FILMS

from flows.build_dataset import BuildDatasetParams, build_dataset
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
    with pytest.raises(ConfigError, match="give `dump`"):
        build_dataset(BuildDatasetParams(category="x", out=str(tmp_path / "o")))
    assert not (tmp_path / "o").exists()
