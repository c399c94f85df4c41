"""MLflow tracking: one experiment per comparison, a parent run, a nested run per recipe.

Runs are created by id and written to through `MlflowClient`, never through
the global "active run", so a Prefect task (or its retry, or another process)
can keep writing to the run it was handed: the run id is what survives.
Which run a comparison writes to, a new one or one an earlier attempt left
behind, is decided in `pit.runs`; what a run read and made (its data set
inputs, its stages' logged models) in `pit.lineage`.

MLflow 3 opens an experiment in one of two views, GenAI (traces) or model
training (runs). Without its workflow switch the UI reads the experiment tag
`mlflow.experimentKind`; the 3.17 UI has the switch and reads the page's
`?workflowType=` parameter, else the view the browser last used (GenAI at
first). pit sets the tag on its experiments and hands out links that carry
the parameter (`Tracker.experiment_url`).
"""

from __future__ import annotations

import functools
import getpass
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import BaseModel, Field

from pit.config import PitConfig
from pit.storage.leftovers import file_lock

if TYPE_CHECKING:
    from mlflow.entities import LoggedModel

PARENT_TAG = "mlflow.parentRunId"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
VERSION_TAG = "pit.version"
GIT_DIRTY_TAG = "pit.git.dirty"
PREFECT_RUN_TAG = "pit.prefect.flow_run_id"


class TrackedDataset(BaseModel, frozen=True):
    """A data set as a run's input: the runs table's Dataset column shows its name and digest.

    Only its description goes to MLflow (`source` is where it is published),
    never its rows: a Wikipedia data set is gigabytes.
    """

    name: str = Field(..., description="What the runs table shows, e.g. synthetic-world-seed-0.")
    digest: str = Field(..., description="pit's fingerprint of its content.")
    source: str = Field(..., description="Path or URL where it is published.")
    context: str = Field("training", description="training or evaluation.")
    profile: dict[str, Any] = Field(default_factory=dict, description="Counts users read.")


def _git(folder: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@functools.cache
def code_version(folder: Path | None = None) -> dict[str, str]:
    """pit's version and the commit of the checkout it is imported from, where it is in one.

    The package's `__init__.py` must be tracked there: a wheel installed in a
    virtual environment that sits inside some other checkout has no commit.
    `folder` (the package's, by default) lets a test point elsewhere.
    """
    from pit import __version__

    folder = folder or Path(__file__).resolve().parent
    tags = {VERSION_TAG: __version__}
    if _git(folder, "ls-files", "--error-unmatch", "__init__.py") is None:
        return tags
    commit = _git(folder, "rev-parse", "HEAD")
    if commit:
        tags["mlflow.source.git.commit"] = commit
        dirty = _git(folder, "status", "--porcelain", "--untracked-files=no")
        tags[GIT_DIRTY_TAG] = "false" if dirty == "" else "true"
    return tags


def source_tags(env: dict[str, str] | None = None) -> dict[str, str]:
    """The run's source as MLflow's own `start_run` records it, plus pit's version.

    A run started by a Prefect worker (which sets `PREFECT__FLOW_RUN_ID`) is a
    JOB named after its flow run; otherwise a LOCAL run named after the
    program, as MLflow names it.
    """
    env = os.environ if env is None else env
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    tags = {"mlflow.user": user, **code_version()}
    flow_run = env.get("PREFECT__FLOW_RUN_ID")
    if flow_run:
        tags |= {"mlflow.source.type": "JOB", "mlflow.source.name": f"prefect flow run {flow_run}",
                 PREFECT_RUN_TAG: flow_run}
    else:
        tags |= {"mlflow.source.type": "LOCAL",
                 "mlflow.source.name": sys.argv[0] if sys.argv and sys.argv[0] else "<console>"}
    return tags


def tracking_uri(configured: str | None, workdir: str) -> str:
    """MLFLOW_TRACKING_URI wins, as MLflow users expect; then config; then a SQLite file."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if configured:
        return configured
    path = Path(workdir).resolve() / "mlflow.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a `sqlite:///` tracking URI (None for a server or in-memory one)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    path = uri[len(prefix):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def _client(uri: str) -> MlflowClient:
    """A client of `uri`; a SQLite file is created and migrated by one process at a time.

    MLflow creates a missing SQLite database and runs its alembic migrations
    when a client first opens it. Two comparisons started together on one
    work folder would both migrate the same new file, and the second fails
    (`duplicate column name`). Opening it under a lock beside the file makes
    the second wait and find it migrated; later opens only read its schema.
    """
    db = _sqlite_file(uri)
    if db is None:
        return MlflowClient(tracking_uri=uri)
    with file_lock(db.with_name(f".{db.name}.lock")):
        return MlflowClient(tracking_uri=uri)


class Tracker:
    def __init__(self, uri: str, experiment: str, artifact_location: str | None = None) -> None:
        self.uri = uri
        self.client = _client(uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            try:
                self.experiment_id = self.client.create_experiment(
                    experiment, artifact_location=artifact_location,
                    tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})
                return
            except MlflowException:
                # Another run created it between the lookup and the create: use theirs.
                exp = self.client.get_experiment_by_name(experiment)
                if exp is None:
                    raise
        self.experiment_id = exp.experiment_id
        if EXPERIMENT_KIND_TAG not in exp.tags:
            self.client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)

    def experiment_url(self) -> str | None:
        """The experiment's runs in the MLflow UI's model-training view; None off a server."""
        if not self.uri.startswith(("http://", "https://")):
            return None
        return (f"{self.uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs"
                "?workflowType=machine_learning")

    def start_run(self, name: str, parent_id: str | None = None,
                  tags: dict[str, str] | None = None) -> str:
        tags = {**source_tags(), **(tags or {})}
        if parent_id:
            tags[PARENT_TAG] = parent_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        return run.info.run_id

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        flat = {k: (v if isinstance(v, str) else json.dumps(v, default=str))[:6000]
                for k, v in _flatten(params).items()}
        existing = self.client.get_run(run_id).data.params
        new = [Param(k, v) for k, v in flat.items() if k not in existing]
        for i in range(0, len(new), 100):
            self.client.log_batch(run_id, params=new[i : i + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int | None = None,
                    once: bool = False) -> None:
        """Log metrics at `step`; with `once`, skip keys that already have a value there.

        `once` keeps a retried task or a final evaluation that repeats the last
        epoch's from writing the same step twice.
        """
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, step or 0) for k, v in metrics.items()
                 if v is not None and v == v
                 and not (once and (step or 0) in self.logged_steps(run_id, k))]
        if items:
            self.client.log_batch(run_id, metrics=items)

    def logged_steps(self, run_id: str, key: str) -> set[int]:
        return {m.step for m in self.client.get_metric_history(run_id, key)}

    def log_table(self, run_id: str, rows: list[dict[str, Any]], name: str) -> None:
        if rows:
            data = {k: [r.get(k) for r in rows] for k in rows[0]}
            self.client.log_table(run_id, data=data, artifact_file=name)

    def log_dict(self, run_id: str, obj: Any, name: str) -> None:
        self.client.log_dict(run_id, obj, name)

    def log_figure(self, run_id: str, fig, name: str) -> None:
        self.client.log_figure(run_id, fig, name)

    def log_datasets(self, run_id: str, datasets: Sequence[TrackedDataset]) -> None:
        """Each data set as an input of the run, tagged with its context; again is a no-op."""
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        inputs = []
        for d in datasets:
            with warnings.catch_warnings():  # a local path matches two equal source classes
                warnings.simplefilter("ignore", UserWarning)
                source = resolve_dataset_source(d.source)
            meta = MetaDataset(source, name=d.name, digest=d.digest).to_dict()
            inputs.append(DatasetInput(Dataset(**meta, profile=json.dumps(d.profile)),
                                       [InputTag(MLFLOW_DATASET_CONTEXT, d.context)]))
        if inputs:
            self.client.log_inputs(run_id, datasets=inputs)

    def find_model(self, tag: str, value: str) -> LoggedModel | None:
        """The experiment's logged model whose tag `tag` is `value` (hex: no quoting needed)."""
        found = self.client.search_logged_models([self.experiment_id],
                                                 filter_string=f"tags.`{tag}` = '{value}'",
                                                 max_results=1)
        return found[0] if found else None

    def create_model(self, name: str, run_id: str, tags: dict[str, str],
                     params: dict[str, Any], model_type: str) -> LoggedModel:
        """A logged model of this experiment made by run `run_id`, weights left where they are."""
        flat = {k: (v if isinstance(v, str) else json.dumps(v, default=str))[:6000]
                for k, v in _flatten(params).items()}
        return self.client.create_logged_model(self.experiment_id, name=name,
                                               source_run_id=run_id, tags=tags, params=flat,
                                               model_type=model_type)

    def finish_model(self, model: LoggedModel) -> None:
        """Mark a logged model READY (its weights are published), unless it already is."""
        from mlflow.entities import LoggedModelStatus

        if model.status != LoggedModelStatus.READY:
            self.client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)

    def link_model_metrics(self, run_id: str, model_id: str, keys: Sequence[str],
                           steps: tuple[int, int], dataset: TrackedDataset | None = None
                           ) -> None:
        """Give model `model_id` the run's last value of each metric in steps (first, last].

        The very point the run logged (same value, step and time) is logged
        again with the model's id: the model's metrics fill in, and the run's
        curve gains no duplicate, since a tracking database keeps one row per
        point. A metric missing from the run is left out.
        """
        from mlflow.entities import Metric

        first, last = steps
        items = []
        for key in keys:
            points = [m for m in self.client.get_metric_history(run_id, key)
                      if first < m.step <= last]
            if points:
                p = max(points, key=lambda m: (m.step, m.timestamp))
                items.append(Metric(key, p.value, p.timestamp, p.step, model_id=model_id,
                                    dataset_name=dataset.name if dataset else None,
                                    dataset_digest=dataset.digest if dataset else None))
        if items:
            self.client.log_batch(run_id, metrics=items)

    def link_output(self, run_id: str, model_id: str, step: int) -> None:
        """Model `model_id` as an output of run `run_id` (its Models column), once."""
        from mlflow.entities import LoggedModelOutput

        outputs = self.client.get_run(run_id).outputs
        if any(o.model_id == model_id for o in (outputs.model_outputs if outputs else [])):
            return
        self.client.log_outputs(run_id, [LoggedModelOutput(model_id, step)])

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(run_id, k, v)

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def tagged_runs(self, key: str, value: str, parent_id: str | None = None) -> list[Run]:
        """Runs of this experiment whose tag `key` is `value` (under `parent_id`), newest first.

        `value` and `parent_id` are hex (hashes, run ids): nothing in them needs quoting.
        """
        query = f"tags.`{key}` = '{value}'"
        if parent_id:
            query += f" and tags.`{PARENT_TAG}` = '{parent_id}'"
        return list(self.client.search_runs([self.experiment_id], query,
                                            order_by=["attributes.start_time DESC"]))

    def running_runs(self) -> list[Run]:
        """Runs of this experiment in state RUNNING."""
        return list(self.client.search_runs([self.experiment_id],
                                            "attributes.status = 'RUNNING'"))

    def reopen(self, run_id: str) -> None:
        """Set a run that ended (or was left RUNNING) to RUNNING again, to write more to it."""
        self.client.update_run(run_id, status="RUNNING")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def tracker_for(cfg: PitConfig) -> Tracker:
    """The tracker of a comparison's config: its URI resolved as `tracking_uri` does."""
    return Tracker(tracking_uri(cfg.tracking.tracking_uri, cfg.workdir), cfg.tracking.experiment)
