"""Prefect tasks over `pit.wiki`: each calls one pit function and returns small results.

Retries cover what fails transiently past pit's own retries (a mirror or an
LLM endpoint down for longer, a lost connection to a Dask worker), by
`tasks.retries.retry_if_transient`; a damaged dump fails the same way every
time, so its DataError is not retried, and neither is a bug.
"""

from __future__ import annotations

from typing import Any

from prefect import task

from pit.wiki import (
    Chunk,
    PageSelector,
    ScanResult,
    ScanStats,
    WikiBuildConfig,
    plan_chunks,
    scan_chunk,
)
from pit.wiki.params import BuildDatasetParams, run_build
from pit.wiki.reader import MAX_PAGE_BYTES
from tasks.retries import retry_if_transient


@task(
    retries=3,
    retry_delay_seconds=[10, 60, 300],
    retry_condition_fn=retry_if_transient,
    tags=["wiki", "download"],
)
def fetch_dump(params: BuildDatasetParams) -> tuple[str, str | None]:
    """Local paths of the dump and index: downloaded from a URL or the newest on a mirror."""
    return params.resolve_dump()


@task(retries=1, retry_condition_fn=retry_if_transient, tags=["wiki"])
def make_selector(config: WikiBuildConfig) -> PageSelector:
    """The page selector, read once (with a categorylinks table this reads the whole table)."""
    return config.selector()


@task(retries=1, retry_condition_fn=retry_if_transient, tags=["wiki"])
def plan_wiki_chunks(
    dump: str, index: str | None, chunk_mb: float, selector: PageSelector
) -> list[Chunk]:
    """Byte ranges of whole bz2 streams, one list per scan task."""
    return plan_chunks(dump, index, int(chunk_mb * (1 << 20)), selector.selected_ids)


@task(
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_if_transient,
    tags=["wiki", "scan"],
)
def scan_wiki_chunk(
    chunk: Chunk, selector: PageSelector, on_error: str = "raise",
    max_page_bytes: int = MAX_PAGE_BYTES,
) -> tuple[list[dict[str, Any]], ScanStats]:
    """Selected records of one chunk (runs wherever the task runner puts it, e.g. Dask)."""
    return scan_chunk(chunk, selector, on_error, max_page_bytes)


@task(retries=1, retry_condition_fn=retry_if_transient, tags=["wiki"])
def build_wiki(
    params: BuildDatasetParams, resolved: tuple[str, str | None], scan: ScanResult | None = None
) -> dict[str, Any]:
    """Build and publish the data set (scanning with a local process pool unless `scan` given)."""
    return run_build(params, scan=scan, resolved=resolved)
