"""Flow `build_dataset`: a Wikipedia dump (file or newest on a mirror) to a published data set.

Two ways to scan, same result: `runner="process"` gives the whole scan to one
task that runs a local process pool (one machine, all its cores);
`runner="dask"` maps one task per chunk over a Dask cluster through
prefect-dask, so a monthly refresh of the 24 GB English dump can use many
machines. The chunk results are merged in dump order, so both runners publish
the same data set with the same fingerprint.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from prefect import flow, unmapped
from pydantic import BaseModel, Field

from pit.errors import ConfigError
from pit.wiki import ScanResult, ScanStats, WikiBuildConfig
from tasks.wiki import build_wiki, fetch_dump, make_selector, plan_wiki_chunks, scan_wiki_chunk


class BuildDatasetParams(BaseModel):
    """Parameters of `build_dataset` (the Prefect UI renders them as a form)."""

    category: str = Field(description=r"category regex, e.g. '^2023 films$'")
    out: str = Field(description="output folder, published atomically")
    dump: str | None = Field(None, description="dump file; or leave empty and give `mirror`")
    index: str | None = Field(None, description="multistream index of `dump`")
    mirror: str | None = Field(None, description="mirror base: the newest finished dump is used")
    cache: str = Field("~/.cache/pit/dumps", description="where mirror downloads go")
    wiki: str = Field("enwiki", description="wiki on the mirror")
    runner: Literal["process", "dask"] = Field("process", description="local pool or Dask")
    dask_address: str | None = Field(None, description="scheduler address; None: LocalCluster")
    dask_workers: int = Field(2, description="LocalCluster workers when no address is given")
    workers: int | None = Field(None, description="process-pool size (process runner)")
    chunk_mb: float = Field(8.0, description="compressed MB per scan task")
    on_error: Literal["raise", "skip"] = Field("raise", description="damaged input: fail or skip")
    categorylinks: str | None = Field(None, description="categorylinks.sql.gz of the same date")
    previous: str | None = Field(None, description="previous snapshot folder for delta.json")
    test_fraction: float = Field(0.13, description="test share of film documents")

    def problems(self) -> list[str]:
        out = []
        if not self.dump and not self.mirror:
            out.append("give `dump` (a file) or `mirror` (a dump mirror base)")
        if self.dump and self.mirror:
            out.append("give only one of `dump` and `mirror`")
        return out


def _scan_on_dask(params: BuildDatasetParams, config: WikiBuildConfig) -> ScanResult:
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as e:
        raise ConfigError(
            "runner='dask' needs prefect-dask: pip install prefect-dask", source="build_dataset"
        ) from e
    kwargs = (
        {"address": params.dask_address}
        if params.dask_address
        else {"cluster_kwargs": {"n_workers": params.dask_workers, "threads_per_worker": 1}}
    )

    @flow(name="scan-dump-on-dask", task_runner=DaskTaskRunner(**kwargs))
    def scan_on_dask() -> ScanResult:
        t0 = time.perf_counter()
        selector = make_selector(config)
        chunks = plan_wiki_chunks(config.dump, config.index, config.chunk_mb, selector)
        futures = scan_wiki_chunk.map(
            chunks, selector=unmapped(selector), on_error=unmapped(config.on_error)
        )
        records, total = [], ScanStats()
        for fut in futures:
            recs, stats = fut.result()
            records.extend(recs)
            total.add(stats)
        return ScanResult(records, total, time.perf_counter() - t0, len(chunks))

    return scan_on_dask()


@flow(name="build_dataset")
def build_dataset(params: BuildDatasetParams) -> dict:
    """Fetch (if a mirror is given), scan, build QA, split and publish; returns the manifest."""
    problems = params.problems()
    if problems:
        raise ConfigError(problems, source="build_dataset parameters")
    dump, index = params.dump, params.index
    if params.mirror:
        got = fetch_dump(params.mirror, str(Path(params.cache).expanduser()), params.wiki)
        dump, index = got["dump"], got["index"]
    config = WikiBuildConfig(
        dump=dump,
        index=index,
        category=params.category,
        out=params.out,
        workers=params.workers,
        chunk_mb=params.chunk_mb,
        on_error=params.on_error,
        categorylinks=params.categorylinks,
        previous=params.previous,
        test_fraction=params.test_fraction,
    )
    config.validate_all()
    scan = _scan_on_dask(params, config) if params.runner == "dask" else None
    return build_wiki(config, scan=scan)
