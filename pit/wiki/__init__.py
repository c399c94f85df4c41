"""Wikipedia dumps to knowledge data sets: find, read in parallel, select, clean, QA, publish.

`pit data wiki` and the `build_dataset` flow take the same `BuildDatasetParams`
and run `run_build` (fetch, then `build_wiki_dataset`); the pieces are public
so a notebook can run any one of them on its own.
"""

from pit.wiki.build import WikiBuildConfig, assemble, build_wiki_dataset, load_card
from pit.wiki.dump import DumpInfo, download, fetch_latest, find_latest
from pit.wiki.infobox import parse_infobox, release_year
from pit.wiki.params import BuildDatasetParams, run_build
from pit.wiki.qa_infobox import infobox_qa, subject
from pit.wiki.reader import Chunk, ScanResult, ScanStats, plan_chunks, scan_chunk, scan_dump
from pit.wiki.select import PageSelector, page_categories
from pit.wiki.wikitext import lead_text

__all__ = [
    "BuildDatasetParams",
    "Chunk",
    "DumpInfo",
    "PageSelector",
    "ScanResult",
    "ScanStats",
    "WikiBuildConfig",
    "assemble",
    "build_wiki_dataset",
    "download",
    "fetch_latest",
    "find_latest",
    "infobox_qa",
    "lead_text",
    "load_card",
    "page_categories",
    "parse_infobox",
    "plan_chunks",
    "release_year",
    "run_build",
    "scan_chunk",
    "scan_dump",
    "subject",
]
