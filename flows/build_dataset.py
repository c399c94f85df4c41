"""Flow `build_dataset`: a Wikipedia dump (file or newest on a mirror) to a published data set.

Its parameters are `BuildDatasetParams`, the model `pit data wiki` builds from
its options, so the Prefect UI's form offers every option of the command.

Two ways to scan, same result: `runner="process"` gives the whole scan to one
task that runs a local process pool (one machine, all its cores);
`runner="dask"` maps one task per chunk over a Dask cluster through
prefect-dask, so a monthly refresh of the 24 GB English dump can use many
machines. The chunk results are merged in dump order, so both runners publish
the same data set with the same fingerprint.
"""

from __future__ import annotations

import time

from prefect import flow, unmapped

from pit.errors import ConfigError
from pit.wiki import ScanResult, ScanStats, WikiBuildConfig
from pit.wiki.params import BuildDatasetParams
from tasks.wiki import build_wiki, fetch_dump, make_selector, plan_wiki_chunks, scan_wiki_chunk

__all__ = ["BuildDatasetParams", "build_dataset"]


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
            chunks, selector=unmapped(selector), on_error=unmapped(config.on_error),
            max_page_bytes=unmapped(config.max_page_bytes),
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
    """Fetch (from a URL or mirror), scan, write QA, split and publish; returns the card.

    The same parameters as `pit data wiki`, checked all at once before any work.
    """
    params.validate_all()
    resolved = fetch_dump(params)
    scan = None
    if params.runner == "dask":
        scan = _scan_on_dask(params, params.build_config(*resolved))
    return build_wiki(params, resolved, scan=scan)
