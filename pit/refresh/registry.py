"""The refresh's model versions in the MLflow Model Registry: tags, `challenger`, `champion`.

Each month registers one version of the registered model, with its figures
as tags (dump date, data set fingerprint, new-knowledge EM and its gain,
retention EM, forgetting, the gate's verdict and reason), and points the
alias `challenger` at it. `champion` moves to it only when the gate passed,
and only if `champion` still names the version the month started from: a
rollback or another refresh in the meantime wins, and the version is tagged
rejected with that reason. `previous-champion` keeps the version `champion`
named before, so a rollback is one alias move.

Never half-registered: the version is created last, after the model files
are in the month's MLflow run, with every tag in the same request (the
registry writes a version and its tags in one transaction); aliases are set
after. A month run again after a crash finds its version by dump date and
data set fingerprint instead of creating a second one, and setting aliases
again is harmless.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)
from mlflow.tracking import MlflowClient

from pit.refresh.gate import Verdict
from pit.refresh.outcome import FIGURES

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous-champion"
MODEL_KEY_TAG = "pit.model_key"
PARENT_TAG = "pit.parent_version"
START_TAG = "pit.start_model"


def _figure(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def version_tags(dump_date: str, dataset_fingerprint: str, figures: dict[str, float | None],
                 verdict: Verdict, model_key: str, model_url: str, start_model: str,
                 parent: str | None, month_index: int) -> dict[str, str]:
    """A month's version tags: its figures first (what people read in the UI), then pointers."""
    return {"dump_date": dump_date, "dataset_fingerprint": dataset_fingerprint,
            **{k: _figure(figures.get(k)) for k in FIGURES},
            "gate_verdict": verdict.status, "gate_reason": verdict.reason,
            "month_index": str(month_index), MODEL_KEY_TAG: model_key, "pit.model_url": model_url,
            START_TAG: start_model, PARENT_TAG: parent or ""}


@dataclass(frozen=True)
class Promotion:
    """What became of a version at the gate: its status, and the reason in words."""

    status: str
    reason: str


class Registry:
    """One registered model of the MLflow Model Registry, as the refresh uses it."""

    def __init__(self, uri: str, name: str) -> None:
        self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        self.name = name

    def alias(self, alias: str) -> ModelVersion | None:
        """The version `alias` names; None when it names none (or the model is not there yet)."""
        try:
            aliases = self.client.get_registered_model(self.name).aliases
        except MlflowException as e:
            if e.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                return None
            raise
        number = aliases.get(alias)
        return None if number is None else self.client.get_model_version(self.name, str(number))

    def versions(self) -> list[ModelVersion]:
        return list(self.client.search_model_versions(f"name='{self.name}'"))

    def find(self, dump_date: str, dataset_fingerprint: str) -> ModelVersion | None:
        """The version an earlier attempt registered for this dump and data set, if any."""
        for v in sorted(self.versions(), key=lambda v: int(v.version)):
            if (v.tags.get("dump_date") == dump_date
                    and v.tags.get("dataset_fingerprint") == dataset_fingerprint):
                return self.client.get_model_version(self.name, v.version)
        return None

    def register(self, source: str, run_id: str, tags: dict[str, str],
                 description: str) -> ModelVersion:
        """A new version with all its tags; the registered model is created on first use."""
        try:
            self.client.create_registered_model(
                self.name, description="Kept current by `pit refresh`: one version per dump.")
        except MlflowException as e:
            if e.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
        return self.client.create_model_version(self.name, source, run_id=run_id, tags=tags,
                                                description=description)

    def promote(self, version: ModelVersion, verdict: Verdict) -> Promotion:
        """Point `challenger` at `version`; move `champion` if the gate passed and it did not move.

        `champion` must still name the version the month started from (its
        `pit.parent_version` tag; none on the first month), or already name
        `version` (an earlier attempt got this far).
        """
        number = str(version.version)
        self.client.set_registered_model_alias(self.name, CHALLENGER, number)
        if not verdict.passed:
            return Promotion("rejected", verdict.reason)
        current = self.alias(CHAMPION)
        now = str(current.version) if current else ""
        if now == number:
            return Promotion("promoted", verdict.reason)
        started_from = version.tags.get(PARENT_TAG, "")
        if now != started_from:
            reason = (f"champion moved from {started_from or 'none'} to {now or 'none'} while "
                      f"this version was trained from {started_from or 'the base model'}; it is "
                      "not promoted over a version it was not compared with. Run the refresh "
                      "again after moving `champion` back, or promote it by hand.")
            self.tag(number, {"gate_verdict": "rejected", "gate_reason": reason})
            return Promotion("rejected", reason)
        if current is not None:
            self.client.set_registered_model_alias(self.name, PREVIOUS, now)
        self.client.set_registered_model_alias(self.name, CHAMPION, number)
        log.info("%s version %s is now %s (was %s)", self.name, number, CHAMPION, now or "none")
        return Promotion("promoted", verdict.reason)

    def tag(self, version: str, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_model_version_tag(self.name, version, k, v)


def version_url(tracking_uri: str, name: str, version: str) -> str | None:
    """The version's page in the MLflow UI, when the tracking URI is a server."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    return f"{tracking_uri.rstrip('/')}/#/models/{name}/versions/{version}"


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    """The run's page in the MLflow UI, when the tracking URI is a server."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
