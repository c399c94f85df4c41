"""`pit data wiki`: build a knowledge data set from a Wikipedia dump.

`--dump` takes a local file, a URL of a dump file, or a mirror base (a folder or
URL laid out like dumps.wikimedia.org); for a mirror the newest finished
multistream dump and its index are downloaded (resumable, sha1-checked) into
`--cache` first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from pit.errors import PitError
from pit.wiki.build import WikiBuildConfig, build_wiki_dataset
from pit.wiki.dump import DumpFile, download, fetch_latest


def _is_dump_file(ref: str) -> bool:
    return ref.endswith((".bz2", ".xml"))


def _resolve(dump: str, index: str | None, cache: Path, wiki: str) -> tuple[str, str | None]:
    """Local paths for the dump and index, downloading them when given as URLs or a mirror."""
    if not _is_dump_file(dump):
        info, d, i = fetch_latest(dump, cache, wiki)
        typer.echo(f"using {info.wiki} {info.date}: {d.name}", err=True)
        return str(d), str(i)
    if "://" in dump and not dump.startswith("file://"):
        dump = str(download(DumpFile(dump.rsplit("/", 1)[-1], dump, None, None), cache))
    if index and "://" in index and not index.startswith("file://"):
        index = str(download(DumpFile(index.rsplit("/", 1)[-1], index, None, None), cache))
    return dump, index


def _llm_generator(base_url: str | None, model: str | None, local: str | None, cache: Path):
    """The LLM QA generator the options ask for, or None for infobox QA alone."""
    if not (base_url or local):
        return None
    from pit.wiki.qa_llm import LLMQAConfig, LLMQAGenerator

    if local:
        cfg = LLMQAConfig(backend="transformers", model_name_or_path=local, cache_dir=cache)
    else:
        if not model:
            raise typer.BadParameter("--llm-base-url needs --llm-model (the served model name)")
        cfg = LLMQAConfig(backend="openai", base_url=base_url, model=model, cache_dir=cache)
    return LLMQAGenerator(cfg)


def wiki(
    dump: Annotated[str, typer.Option(help="dump file, its URL, or a mirror base URL/folder")],
    category: Annotated[str, typer.Option(help=r"category regex, e.g. '^2023 films$'")],
    out: Annotated[str, typer.Option(help="output folder (published atomically)")],
    index: Annotated[
        str | None, typer.Option(help="multistream index; without it one worker reads")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="worker processes (all cores)")] = None,
    chunk_mb: Annotated[float, typer.Option(help="compressed MB per worker task")] = 8.0,
    on_error: Annotated[
        str, typer.Option(help="raise: fail on a damaged stream/page; skip: skip and count")
    ] = "raise",
    categorylinks: Annotated[
        str | None, typer.Option(help="categorylinks.sql.gz: authoritative categories")
    ] = None,
    domain: Annotated[
        list[str] | None, typer.Option(help="NAME=REGEX domain mapping, repeatable")
    ] = None,
    test_fraction: Annotated[float, typer.Option(help="test share of film documents")] = 0.13,
    previous: Annotated[
        str | None, typer.Option(help="previous snapshot folder: writes delta.json")
    ] = None,
    cache: Annotated[Path, typer.Option(help="where mirror downloads go")] = Path(
        "~/.cache/pit/dumps"
    ).expanduser(),
    wiki_name: Annotated[str, typer.Option("--wiki", help="wiki on the mirror")] = "enwiki",
    llm_base_url: Annotated[str | None, typer.Option(
        help="OpenAI-compatible endpoint (vLLM, TGI, OpenAI) that writes ~5 QA pairs per "
        "document, the paper's way; the key comes from OPENAI_API_KEY")] = None,
    llm_model: Annotated[str | None, typer.Option(help="model name at --llm-base-url")] = None,
    llm_local_model: Annotated[str | None, typer.Option(
        help="a local transformers model (folder or Hub id) that writes the QA instead")] = None,
    llm_cache: Annotated[Path, typer.Option(help="cache of LLM replies by document hash")] = Path(
        "~/.cache/pit/qa-llm"
    ).expanduser(),
) -> None:
    """Build docs.jsonl, qa.jsonl and manifest.json from a Wikipedia dump."""
    try:
        domains = None
        if domain:
            bad = [d for d in domain if "=" not in d]
            if bad:
                raise typer.BadParameter(f"--domain expects NAME=REGEX, got {bad}")
            domains = dict(d.split("=", 1) for d in domain)
        dump_path, index_path = _resolve(dump, index, cache, wiki_name)
        cfg = WikiBuildConfig(
            dump=dump_path,
            index=index_path,
            category=category,
            out=out,
            workers=workers,
            chunk_mb=chunk_mb,
            on_error=on_error,
            categorylinks=categorylinks,
            test_fraction=test_fraction,
            previous=previous,
            **({"domains": domains} if domains else {}),
        )
        generator = _llm_generator(llm_base_url, llm_model, llm_local_model, llm_cache)
        try:
            manifest = build_wiki_dataset(cfg, qa_generator=generator)
        finally:
            if generator is not None:
                generator.close()
    except (PitError, ValidationError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    summary = {k: manifest[k] for k in ("counts", "timings", "fingerprint", "delta")}
    typer.echo(json.dumps({"out": out, **summary}, indent=2))
