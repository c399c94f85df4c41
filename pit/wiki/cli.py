"""`pit data wiki`: build a knowledge data set from a Wikipedia dump.

Every option is a field of `BuildDatasetParams`, named, described and
defaulted there, so the command and the Prefect `build_dataset` flow offer the
same options. With `--runner dask` the command runs that flow; otherwise it
runs the same build (`run_build`) in this process, with a local process pool.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from pit.errors import PitError
from pit.wiki.params import BuildDatasetParams, run_build

_FIELDS = BuildDatasetParams.model_fields


def _help(name: str) -> str:
    return _FIELDS[name].description or ""


def _default(name: str) -> Any:
    return _FIELDS[name].default


def _domains(pairs: list[str] | None) -> dict[str, str] | None:
    if not pairs:
        return None
    bad = [d for d in pairs if "=" not in d]
    if bad:
        raise typer.BadParameter(f"--domain expects NAME=REGEX, got {bad}")
    return dict(d.split("=", 1) for d in pairs)


def wiki(
    dump: Annotated[str, typer.Option(help=_help("dump"))],
    category: Annotated[str, typer.Option(help=_help("category"))],
    out: Annotated[str, typer.Option(help=_help("out"))],
    overwrite: Annotated[bool, typer.Option(help=_help("overwrite"))] = False,
    old_category: Annotated[str | None, typer.Option(help=_help("old_category"))] = None,
    index: Annotated[str | None, typer.Option(help=_help("index"))] = None,
    categorylinks: Annotated[str | None, typer.Option(help=_help("categorylinks"))] = None,
    domains: Annotated[
        list[str] | None,
        typer.Option("--domain", help="NAME=REGEX, repeatable: " + _help("domains")),
    ] = None,
    test_domain: Annotated[str, typer.Option(help=_help("test_domain"))] = _default("test_domain"),
    test_fraction: Annotated[float, typer.Option(help=_help("test_fraction"))] = _default(
        "test_fraction"
    ),
    namespaces: Annotated[
        list[int] | None,
        typer.Option("--namespace", help="repeatable: " + _help("namespaces")),
    ] = None,
    infobox_qa: Annotated[bool, typer.Option(help=_help("infobox_qa"))] = _default("infobox_qa"),
    max_qa_per_doc: Annotated[int, typer.Option(help=_help("max_qa_per_doc"))] = _default(
        "max_qa_per_doc"
    ),
    llm_base_url: Annotated[str | None, typer.Option(help=_help("llm_base_url"))] = None,
    llm_model: Annotated[str | None, typer.Option(help=_help("llm_model"))] = None,
    llm_local_model: Annotated[str | None, typer.Option(help=_help("llm_local_model"))] = None,
    llm_cache: Annotated[str, typer.Option(help=_help("llm_cache"))] = _default("llm_cache"),
    llm_max_refused_share: Annotated[
        float, typer.Option(help=_help("llm_max_refused_share"))
    ] = _default("llm_max_refused_share"),
    workers: Annotated[int | None, typer.Option(help=_help("workers"))] = None,
    chunk_mb: Annotated[float, typer.Option(help=_help("chunk_mb"))] = _default("chunk_mb"),
    max_page_mb: Annotated[float, typer.Option(help=_help("max_page_mb"))] = _default(
        "max_page_mb"
    ),
    on_error: Annotated[str, typer.Option(help=_help("on_error"))] = _default("on_error"),
    runner: Annotated[str, typer.Option(help=_help("runner"))] = _default("runner"),
    dask_address: Annotated[str | None, typer.Option(help=_help("dask_address"))] = None,
    dask_workers: Annotated[int, typer.Option(help=_help("dask_workers"))] = _default(
        "dask_workers"
    ),
    previous: Annotated[str | None, typer.Option(help=_help("previous"))] = None,
    dump_date: Annotated[str | None, typer.Option(help=_help("dump_date"))] = None,
    cache: Annotated[str, typer.Option(help=_help("cache"))] = _default("cache"),
    wiki: Annotated[str, typer.Option(help=_help("wiki"))] = _default("wiki"),
) -> None:
    """Build a KnowledgeDataset (docs/, qa/, card.json) with docs.jsonl and qa.jsonl from a dump."""
    try:
        optional = {"domains": _domains(domains), "namespaces": namespaces}
        params = BuildDatasetParams(
            dump=dump,
            category=category,
            out=out,
            overwrite=overwrite,
            old_category=old_category,
            index=index,
            categorylinks=categorylinks,
            test_domain=test_domain,
            test_fraction=test_fraction,
            infobox_qa=infobox_qa,
            max_qa_per_doc=max_qa_per_doc,
            llm_base_url=llm_base_url,
            llm_model=llm_model,
            llm_local_model=llm_local_model,
            llm_cache=llm_cache,
            llm_max_refused_share=llm_max_refused_share,
            workers=workers,
            chunk_mb=chunk_mb,
            max_page_mb=max_page_mb,
            on_error=on_error,
            runner=runner,
            dask_address=dask_address,
            dask_workers=dask_workers,
            previous=previous,
            dump_date=dump_date,
            cache=cache,
            wiki=wiki,
            **{k: v for k, v in optional.items() if v},
        )
        if params.runner == "dask":
            from flows.build_dataset import build_dataset

            card = build_dataset(params)
        else:
            card = run_build(params)
    except (PitError, ValidationError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    summary = {
        k: card[k] for k in ("dump", "dump_date", "counts", "timings", "fingerprint", "delta")
    }
    typer.echo(json.dumps({"out": out, **summary}, indent=2))
