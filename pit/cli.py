"""`pit`: the command line of users and checks.

Every command that trains runs a Prefect flow, so a run shows up on a Prefect
server when one is configured (PREFECT_API_URL) and runs on a temporary local
API otherwise. Errors name the bad input and the fix, and exit with code 2.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from pit.errors import PitError

app = typer.Typer(
    help="Keep a language model's knowledge current with pre-instruction-tuning (PIT).\n\n"
    "Start with `pit demo`; compare recipes with `pit compare --preset smoke`; "
    "list recipes with `pit recipes`.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Build knowledge data sets (synthetic world, Wikipedia dumps).",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console(stderr=True)

SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override any config field: section.field=value "
                 "(repeatable), e.g. --set world.seed=3 --set train.doc_lr=5e-4."),
]


def _fail(e: Exception) -> None:
    console.print(f"[bold red]error:[/] {masked_uri(str(e))}", soft_wrap=True)
    raise typer.Exit(2)


def quiet_services() -> None:
    """Keep the terminal to pit's own progress and table (offline machines included)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # A busy laptop can take longer than Prefect's default 20 s to start its local API.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow prints "View run ... at <tracking URI>" with any password in it; pit prints
    # where to look itself, masked.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _run_compare(preset: str | None, config: Path | None, methods: str | None, seeds: int | None,
                 results: Path | None, overrides: list[str], artifact_root: str | None,
                 recipes_dir: list[Path] | None, data: str | None = None,
                 model: str | None = None, parallel: bool = False) -> dict:
    quiet_services()  # before Prefect is imported: it reads its logging settings then
    from flows.compare import CompareParams, compare_methods
    from pit.train.signals import exit_on_sigterm

    exit_on_sigterm()
    from pit.recipe import all_recipes, select_recipes
    from pit.report import figures, render_gaps, render_table, write_results

    dirs = [str(d) for d in recipes_dir or []]
    params = CompareParams.from_slugs(
        [m.strip() for m in methods.split(",") if m.strip()] if methods else None,
        preset=preset, config_file=str(config) if config else None, seeds=seeds,
        overrides=overrides, artifact_root=artifact_root, recipes_dirs=dirs, data=data,
        model=model, parallel=parallel,
    )
    cfg = params.config()
    chosen = select_recipes(cfg.methods, [Path(d) for d in dirs])
    from pit.modeling import check_model

    check_model(cfg.model)
    console.print(f"[bold]pit[/] {cfg.preset}: {len(chosen)} recipe(s) x {cfg.seeds} seed(s): "
                  + ", ".join(r.slug for r in chosen))
    started = time.time()
    doc = compare_methods(params)
    doc["seconds"] = round(time.time() - started, 1)
    known = all_recipes([Path(d) for d in dirs])
    table = render_table(doc["methods"], known,
                         f"pit {cfg.preset} (data: {cfg.data.source}, model: "
                         f"{cfg.model.name_or_path}, {doc['seconds']:.0f} s)")
    out = Console(width=None if sys.stdout.isatty() else 160)
    out.print(table)
    out.print(render_gaps(doc.get("gaps", []), doc.get("chance_exact_match"),
                          doc.get("test_questions"), cfg.seeds))
    if results:
        from pit.plots import close

        write_results(results, doc)
        for name, fig in figures(doc["methods"], known, doc.get("base_retention_em")).items():
            path = results.with_name(f"{results.stem}-{name}")
            fig.savefig(path, dpi=120)
            close(fig)
            console.print(f"figure: {path}")
        console.print(f"results: {results}")
    from pit.tracking import tracker_for

    url = tracker_for(cfg).experiment_url()
    where = (f"open {masked_uri(url)}" if url else
             f"see it with `pit ui` or `mlflow ui --backend-store-uri {_uri(cfg)}`")
    console.print(f"MLflow parent run {doc['mlflow_parent_run_id']}; {where}")
    return doc


def _uri(cfg) -> str:
    """The tracking URI to show: as configured, with any password masked."""
    from pit.tracking import tracking_uri

    return masked_uri(tracking_uri(cfg.tracking.tracking_uri, cfg.workdir))


_PASSWORD_IN_URL = re.compile(r"(://[^/\s:@]+):[^@\s/]+@")


def masked_uri(text: str) -> str:
    """`text` with the password of every `scheme://user:password@` in it replaced by `***`.

    Tracking URIs such as `postgresql://mlflow:secret@db/mlflow` or
    `https://user:token@mlflow.example.com` carry credentials, and so do
    errors that quote them; a terminal or a CI log is no place for them.
    """
    return _PASSWORD_IN_URL.sub(r"\1:***@", text)


@app.command()
def compare(
    preset: Annotated[str | None, typer.Option(help="Shipped preset: smoke, demo or gpu.")] = None,
    config: Annotated[Path | None, typer.Option(help="A YAML config file instead.")] = None,
    methods: Annotated[str | None, typer.Option(
        help="Comma-separated recipe slugs, 'main' (the paper's table) or 'all'.")] = None,
    seeds: Annotated[int | None, typer.Option(min=1, help="Seeds per recipe.")] = None,
    data: Annotated[str | None, typer.Option(
        help="Data set: a folder, s3:// URL or store key from `pit data synth` / `pit data wiki`, "
        "or 'synthetic' (same as --set data.source=...).")] = None,
    model: Annotated[str | None, typer.Option(
        help="Model to start from: a Hugging Face id, a folder, a .gguf file, an s3:// URI, "
        "or 'embedded' (same as --set model.name_or_path=...).")] = None,
    results: Annotated[Path | None, typer.Option(help="Write the results JSON here.")] = None,
    artifact_root: Annotated[str | None, typer.Option(
        help="Where data, models and checkpoints go: a folder or s3://bucket/prefix.")] = None,
    recipes_dir: Annotated[list[Path] | None, typer.Option(
        help="A folder of your own recipe YAML files (repeatable).")] = None,
    parallel: Annotated[bool, typer.Option(
        help="Run each recipe and seed as a flow run of the `run-recipe` deployment on the "
        "Prefect server of PREFECT_API_URL, so its workers train them at once "
        "(after `pit deploy`).")] = False,
    set_: SetOpt = None,
) -> None:
    """Run recipes on one data set and base model; print a table beside the paper's."""
    if not preset and not config:
        preset = "smoke"
    try:
        if parallel and not os.environ.get("PREFECT_API_URL"):
            raise PitError("--parallel hands recipes to workers of a Prefect server: set "
                           "PREFECT_API_URL (e.g. the address `pit ui` prints), run "
                           "`pit deploy` and start a worker on its pool first.")
        _run_compare(preset, config, methods, seeds, results, set_ or [], artifact_root,
                     recipes_dir, data, model, parallel)
    except PitError as e:
        _fail(e)


# What `pit demo` runs within a laptop's quarter of an hour; the demo preset lists more.
DEMO_METHODS = ("closed-book", "open-book", "cpt", "cpt-it", "mix-all", "pit", "pit++")


@app.command()
def demo(
    results: Annotated[Path | None, typer.Option(help="Write the results JSON here.")] = None,
    methods: Annotated[str | None, typer.Option(
        help="Recipes to run; default: the paper's main comparison and pit++.")] = None,
    set_: SetOpt = None,
) -> None:
    """The main job: build the synthetic world, pre-train the base model, compare recipes."""
    try:
        _run_compare("demo", None, methods or ",".join(DEMO_METHODS), None, results,
                     set_ or [], None, None)
    except PitError as e:
        _fail(e)


def _refresh_help(name: str) -> str:
    from pit.refresh.params import RefreshParams

    return RefreshParams.model_fields[name].description or ""


@app.command()
def refresh(
    mirror: Annotated[str, typer.Option(help=_refresh_help("mirror"))],
    category: Annotated[str, typer.Option(help=_refresh_help("category"))],
    registered_model: Annotated[str, typer.Option(help=_refresh_help("registered_model"))],
    wiki: Annotated[str, typer.Option(help=_refresh_help("wiki"))] = "enwiki",
    old_category: Annotated[str | None, typer.Option(help=_refresh_help("old_category"))] = None,
    model: Annotated[str | None, typer.Option(help=_refresh_help("model"))] = None,
    recipe: Annotated[str, typer.Option(help=_refresh_help("recipe"))] = "pit",
    min_gain: Annotated[float, typer.Option(help=_refresh_help("min_gain"))] = 0.0,
    max_forgetting: Annotated[float, typer.Option(help=_refresh_help("max_forgetting"))] = 5.0,
    replay: Annotated[float, typer.Option(help=_refresh_help("replay"))] = 0.0,
    preset: Annotated[str | None, typer.Option(help=_refresh_help("preset"))] = None,
    config: Annotated[Path | None, typer.Option(help=_refresh_help("config_file"))] = None,
    artifact_root: Annotated[str | None, typer.Option(help=_refresh_help("artifact_root"))] = None,
    cache: Annotated[str, typer.Option(help=_refresh_help("cache"))] = "~/.cache/pit/dumps",
    workers: Annotated[int | None, typer.Option(help=_refresh_help("workers"))] = None,
    experiment: Annotated[str | None, typer.Option(help=_refresh_help("experiment"))] = None,
    results: Annotated[Path | None, typer.Option(help="Write the results JSON here.")] = None,
    set_: SetOpt = None,
) -> None:
    """One knowledge refresh: learn the newest dump of a mirror, promote only past the gate.

    Exits 0 when the version was promoted, rejected at the gate, or no new dump was found.
    """
    from pydantic import ValidationError

    quiet_services()
    try:
        from flows.refresh import RefreshParams, knowledge_refresh
        from pit.train.signals import exit_on_sigterm

        exit_on_sigterm()
        params = RefreshParams(
            mirror=mirror, wiki=wiki, category=category, old_category=old_category,
            model=model, registered_model=registered_model, recipe=recipe, min_gain=min_gain,
            max_forgetting=max_forgetting, replay=replay,
            preset=None if config else (preset or "smoke"),
            config_file=str(config) if config else None, overrides=set_ or [],
            artifact_root=artifact_root, cache=cache, workers=workers, experiment=experiment)
        params.validate_all()
        doc = knowledge_refresh(params)
    except (PitError, ValidationError) as e:
        _fail(e)
    if results:
        from pit.report import write_results

        write_results(results, doc)
        console.print(f"results: {results}")
    metrics = ", ".join(f"{k} {v:.1f}" for k, v in doc["metrics"].items() if v is not None)
    version = f" v{doc['model_version']}" if doc["model_version"] else ""
    console.print(f"[bold]{doc['status']}[/] {registered_model}{version} (dump "
                  f"{doc['dump_date'] or 'none'}){': ' + metrics if metrics else ''}"
                  f"{'; ' + doc['gate_reason'] if doc['gate_reason'] else ''}")


@app.command()
def recipes(
    recipes_dir: Annotated[list[Path] | None, typer.Option(help="Extra recipe folders.")] = None,
) -> None:
    """List every recipe with its stages and the paper's exact match."""
    from rich.table import Table

    from pit.recipe import select_recipes

    try:
        found = select_recipes("all", recipes_dir)
    except PitError as e:
        _fail(e)
    table = Table("slug", "stages", "paper EM")
    for r in found:
        table.add_row(r.slug, r.describe(),
                      "-" if r.paper.exact_match is None else f"{r.paper.exact_match:.1f}")
    Console().print(table)


@app.command()
def ui(
    prefect_port: Annotated[int, typer.Option(
        min=1, max=65535, help="Port of the Prefect server (its UI and API).")] = 4200,
    mlflow_port: Annotated[int, typer.Option(
        min=1, max=65535, help="Port of the MLflow server.")] = 5000,
    backend_store_uri: Annotated[str | None, typer.Option(
        help="Where MLflow keeps runs; default: where `pit compare` writes them without a "
        "server (MLFLOW_TRACKING_URI if it names a database, else pit-runs/mlflow.db).")] = None,
    artifacts_destination: Annotated[str | None, typer.Option(
        help="Where the MLflow server stores artifacts logged through it: a folder URI or "
        "s3://bucket/prefix; default: pit-runs/mlartifacts.")] = None,
) -> None:
    """Run a Prefect server and an MLflow server on 127.0.0.1 until Ctrl-C stops both."""
    from pit.config import PitConfig
    from pit.services import run_ui

    try:
        run_ui(prefect_port, mlflow_port, backend_store_uri, artifacts_destination,
               PitConfig.model_fields["workdir"].default,
               lambda text: print(masked_uri(text), flush=True))
    except PitError as e:
        _fail(e)


@data_app.command("synth")
def data_synth(
    out: Annotated[str, typer.Option(help="Output folder for the data set.")],
    preset: Annotated[str, typer.Option(help="Preset whose world section to use.")] = "smoke",
    set_: SetOpt = None,
    overwrite: Annotated[bool, typer.Option(
        help="Replace --out even when it holds files pit did not publish there "
             "(never the current or home directory).")] = False,
) -> None:
    """Build the synthetic knowledge world (docs and QA, old/train/test, two domains)."""
    from pit.config_sources import load_config
    from pit.data.world import build_world
    from pit.storage.destination import check_destination, store_and_key

    try:
        cfg = load_config(preset, None, set_ or [])
        check_destination(out, overwrite=overwrite, storage=cfg.storage)
        ds = build_world(cfg.world)
        store, key = store_and_key(out, cfg.storage)
        with store.staging(key, {"kind": "dataset", "fingerprint": ds.fingerprint}) as folder:
            ds.save(folder)
    except PitError as e:
        _fail(e)
    console.print(json.dumps(ds.stats(), indent=2))


@app.command()
def deploy(
    file: Annotated[Path | None, typer.Option(
        help="The deployment file; default: infra/prefect.yaml.")] = None,
    pool: Annotated[str | None, typer.Option(
        help="Send every deployment to this work pool of the file (e.g. pit-gpu on "
        "Kubernetes) instead of each one's own.")] = None,
    gpu_slots: Annotated[int | None, typer.Option(
        min=0, help="Slots of the `gpu` task concurrency limit: the accelerators the "
        "workers share.")] = None,
) -> None:
    """Create the work pools, concurrency limits and deployments on PREFECT_API_URL's server."""
    quiet_services()
    from flows.deployments import deploy as register

    try:
        out = register(file, pool, gpu_slots)
    except PitError as e:
        _fail(e)
    console.print(f"[bold]pit deploy[/] {out['file']}: work pools {', '.join(out['work_pools'])}; "
                  + ", ".join(f"{t} limit {n}" for t, n in out["concurrency_limits"].items()))
    for name in out["deployments"]:
        console.print(f"  deployment {name}")
    console.print("Start a worker: prefect worker start --pool pit-process "
                  "(or pit-gpu on Kubernetes, see README)")


def _register_wiki() -> None:
    try:
        from pit.wiki.cli import wiki
    except ImportError as e:  # pragma: no cover - only without the optional parser deps
        print(f"pit data wiki unavailable: {e}", file=sys.stderr)
        return
    data_app.command("wiki")(wiki)


_register_wiki()


if __name__ == "__main__":
    app()
