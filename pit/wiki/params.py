"""The parameters of one Wikipedia data set build, shared by `pit data wiki` and its flow.

One pydantic model, so the CLI and the Prefect `build_dataset` flow (whose UI
renders it as a form) offer the same options under the same names, with the
same defaults and descriptions; a test holds the CLI to it. It extends
`WikiBuildConfig` (what the data set depends on) with how to get the dump (a
file, a URL or a mirror), who writes LLM QA, and how to scan (a local process
pool, or Dask through the flow).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ConfigDict, Field

from pit.wiki.build import WikiBuildConfig, build_wiki_dataset
from pit.wiki.dump import download, fetch_latest, file_at_url
from pit.wiki.reader import ScanResult
from pit.wiki.remote import Remote

if TYPE_CHECKING:
    from pit.wiki.qa_llm import LLMQAGenerator

logger = logging.getLogger(__name__)


def is_dump_file(ref: str) -> bool:
    """Whether `dump` names one dump file (else it is a mirror base)."""
    return ref.endswith((".bz2", ".xml"))


def _remote(ref: str | None) -> bool:
    return bool(ref) and "://" in ref and not ref.startswith("file://")


class BuildDatasetParams(WikiBuildConfig):
    """Everything `pit data wiki` and the `build_dataset` flow accept."""

    model_config = ConfigDict(extra="forbid")

    dump: str = Field(
        description=(
            "pages-articles(-multistream).xml.bz2 file, its URL, or a mirror base (a folder "
            "or URL laid out like dumps.wikimedia.org): the newest finished dump there and "
            "its index are downloaded into `cache` (resumable, checked against the size and sha1 "
            "of the dumpstatus.json beside them, re-fetched when the mirror's file changed)"
        )
    )
    cache: str = Field("~/.cache/pit/dumps", description="where downloaded dumps go")
    wiki: str = Field("enwiki", description="wiki on the mirror, e.g. enwiki, dewiki")
    llm_base_url: str | None = Field(
        None,
        description=(
            "OpenAI-compatible endpoint (vLLM, TGI, OpenAI) that writes ~5 QA pairs per "
            "document, the paper's way, beside the infobox ones; the key comes from "
            "OPENAI_API_KEY"
        ),
    )
    llm_model: str | None = Field(None, description="model name served at llm_base_url")
    llm_local_model: str | None = Field(
        None,
        description="a local transformers model (folder or Hub id) that writes the QA instead",
    )
    llm_max_refused_share: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description=(
            "share of documents the LLM endpoint may refuse (HTTP 400/413/422: content filter, "
            "context too long); each is skipped with a warning and counted in the card, and "
            "more than this share, or every document, fails the build"
        ),
    )
    llm_cache: str = Field(
        "~/.cache/pit/qa-llm",
        description="cache of LLM replies by document hash: a rerun asks nothing twice",
    )
    runner: Literal["process", "dask"] = Field(
        "process",
        description=(
            "scan with a local process pool, or map chunks over a Dask cluster "
            "(through Prefect; needs prefect-dask)"
        ),
    )
    dask_address: str | None = Field(
        None, description="Dask scheduler address; None starts a LocalCluster"
    )
    dask_workers: int = Field(2, description="LocalCluster workers when no address is given")

    def problems(self) -> list[str]:
        out = super().problems()
        if self.llm_base_url and not self.llm_model:
            out.append(
                "llm_base_url needs llm_model (--llm-model): the model name the server serves"
            )
        if self.llm_base_url and self.llm_local_model:
            out.append("give one of llm_base_url (an endpoint) and llm_local_model, not both")
        if self.dask_workers < 1:
            out.append(f"dask_workers {self.dask_workers} must be at least 1")
        return out

    def resolve_dump(self) -> tuple[str, str | None]:
        """Local paths of the dump and its index, downloading them from a URL or a mirror."""
        cache = Path(self.cache).expanduser()
        with Remote() as remote:
            if not is_dump_file(self.dump):
                info, dump, index = fetch_latest(self.dump, cache, self.wiki, remote)
                logger.info("using %s %s (%s): %s", info.wiki, info.date, info.job, dump.name)
                return str(dump), str(index)
            dump, index = self.dump, self.index
            if _remote(dump):
                dump = str(download(file_at_url(dump, remote), cache, remote=remote))
            if index and _remote(index):
                index = str(download(file_at_url(index, remote), cache, remote=remote))
        return dump, index

    def build_config(self, dump: str, index: str | None) -> WikiBuildConfig:
        """The build's own config, for a dump and index already on this machine."""
        own = {k: v for k, v in self.model_dump().items() if k in WikiBuildConfig.model_fields}
        return WikiBuildConfig(**{**own, "dump": dump, "index": index})

    def qa_generator(self) -> LLMQAGenerator | None:
        """The LLM QA generator these options ask for, or None for infobox QA alone."""
        if not (self.llm_base_url or self.llm_local_model):
            return None
        from pit.wiki.qa_llm import LLMQAConfig, LLMQAGenerator

        cache = Path(self.llm_cache).expanduser()
        if self.llm_local_model:
            cfg = LLMQAConfig(
                backend="transformers", model_name_or_path=self.llm_local_model, cache_dir=cache
            )
        else:
            cfg = LLMQAConfig(
                backend="openai", base_url=self.llm_base_url, model=self.llm_model, cache_dir=cache,
                max_refused_share=self.llm_max_refused_share,
            )
        return LLMQAGenerator(cfg)


def run_build(
    params: BuildDatasetParams,
    scan: ScanResult | None = None,
    resolved: tuple[str, str | None] | None = None,
) -> dict[str, Any]:
    """One build, as the CLI and the flow run it: check, fetch, scan, QA, publish; the card.

    `resolved` is the (dump, index) pair when the dump was already fetched (the
    flow fetches it in a task of its own, with retries), `scan` a finished scan
    (the flow's Dask runner).
    """
    params.validate_all()
    dump, index = resolved or params.resolve_dump()
    config = params.build_config(dump, index)
    generator = params.qa_generator()
    try:
        return build_wiki_dataset(config, qa_generator=generator, scan=scan)
    finally:
        if generator is not None:
            generator.close()
