"""What one refresh run ends with: the `--results` document and the report people read.

The document is DESIGN.md's contract: `status` (`promoted`, `rejected` or
`no-new-dump`), `dump_date`, `model_version`, `gate_reason` and the four
`metrics` (percent exact match, like the paper's figures), plus where to look
(`registered_model`, `mlflow_run_id`). The report is the same month as a
Markdown table, champion beside challenger, with links to the MLflow run and
model version; the flow publishes it as a Prefect artifact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FIGURES = ("new_em", "new_em_gain", "retention_em", "forgetting")
"""The month's figures of the results contract, in percent exact match."""


@dataclass
class Outcome:
    status: str
    registered_model: str
    dump_date: str | None = None
    model_version: str | None = None
    gate_reason: str | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    champion: dict[str, float | None] = field(default_factory=dict)
    challenger: dict[str, float | None] = field(default_factory=dict)
    run_url: str | None = None
    version_url: str | None = None
    changes: dict[str, int] = field(default_factory=dict)

    def document(self) -> dict[str, Any]:
        return {"status": self.status, "dump_date": self.dump_date,
                "model_version": self.model_version, "gate_reason": self.gate_reason,
                "metrics": {k: self.metrics.get(k) for k in FIGURES},
                "registered_model": self.registered_model, "mlflow_run_id": self.mlflow_run_id}

    def markdown(self) -> str:
        title = f"# Knowledge refresh of `{self.registered_model}`"
        if self.status == "no-new-dump":
            return (f"{title}\n\nNo new finished dump"
                    + (f" after {self.dump_date}" if self.dump_date else "")
                    + (f": {self.gate_reason}" if self.gate_reason else "") + ".\n")
        rows = [("new-knowledge EM (month's held-out questions)", "new_em"),
                ("retention EM (earlier months' and probe questions)", "retention_em"),
                ("retention EM, earlier months' questions only", "retention_earlier_em"),
                ("retention EM, fixed probe set only", "retention_probe_em")]
        table = ["| figure | champion | challenger |", "|---|---|---|"]
        table += [f"| {label} | {_fmt(self.champion.get(k))} | {_fmt(self.challenger.get(k))} |"
                  for label, k in rows]
        m = self.metrics
        run = _link(self.mlflow_run_id, self.run_url)
        version = _link(f"{self.registered_model} v{self.model_version}", self.version_url)
        delta = ", ".join(f"{n} {k}" for k, n in self.changes.items())
        return "\n".join([
            title, "",
            f"Dump **{self.dump_date}**" + (f" ({delta} pages)" if delta else "")
            + f": **{self.status}**. {self.gate_reason or ''}", "",
            *table, "",
            f"Gain {_fmt(m.get('new_em_gain'), True)} EM points, forgetting "
            f"{_fmt(m.get('forgetting'))} points.", "",
            f"MLflow run: {run}; model version: {version}.", ""])


def _fmt(v: float | None, signed: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:+.1f}" if signed else f"{v:.1f}"


def _link(text: str | None, url: str | None) -> str:
    if text is None:
        return "-"
    return f"[{text}]({url})" if url else f"`{text}`"
