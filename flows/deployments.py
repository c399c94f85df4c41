"""`pit deploy`: the work pools, concurrency limits and deployments of `infra/prefect.yaml`.

The file keeps Prefect's own keys for deployments (`name`, `entrypoint`,
`parameters`, `work_pool`, `schedules`, `concurrency_limit`) and adds a
`pit` section for what Prefect's `deploy` does not create: the work pools
and the tag concurrency limits. Entrypoints are module paths of the
installed package, so a worker needs pit installed (the worker image), not
a copy of the deploying machine's folder; nothing is pulled at run time.
Running it again updates everything in place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pit.errors import ConfigError, PitError, TransientError

DEFAULT_FILE = Path("infra") / "prefect.yaml"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PoolSpec(_Spec):
    name: str
    type: Literal["process", "kubernetes", "docker"]
    description: str | None = None
    base_job_template: str | None = Field(
        None, description="A JSON file, relative to the prefect.yaml; default: the type's own.")
    concurrency_limit: int | None = Field(None, ge=0)


class LimitSpec(_Spec):
    tag: str
    limit: int = Field(..., ge=0)


class PitSection(_Spec):
    work_pools: list[PoolSpec] = []
    concurrency_limits: list[LimitSpec] = []
    crash_unresponsive_after_s: int | None = Field(
        600, ge=60, description="Mark Crashed a flow run silent this long; null: never.")


class WorkPoolRef(_Spec):
    name: str
    work_queue_name: str | None = None
    job_variables: dict[str, Any] = {}


class ScheduleSpec(_Spec):
    cron: str
    timezone: str = "UTC"
    active: bool = True


class ConcurrencySpec(_Spec):
    limit: int = Field(..., ge=1)
    collision_strategy: Literal["ENQUEUE", "CANCEL_NEW"] = "ENQUEUE"


class DeploymentSpec(_Spec):
    name: str
    entrypoint: str = Field(..., description="module.path.flow_function")
    description: str | None = None
    tags: list[str] = []
    parameters: dict[str, Any] = {}
    work_pool: WorkPoolRef
    schedules: list[ScheduleSpec] = []
    concurrency_limit: ConcurrencySpec | None = None
    enforce_parameter_schema: bool = True


class PrefectFile(BaseModel):
    """The parts of a prefect.yaml that `pit deploy` reads; other keys are Prefect's own."""

    model_config = ConfigDict(extra="ignore")
    pit: PitSection = PitSection()
    deployments: list[DeploymentSpec]


def find_file(path: str | os.PathLike[str] | None) -> Path:
    """The prefect.yaml to deploy: the one given, else `infra/prefect.yaml` here or beside pit."""
    if path is not None:
        candidates = [Path(path)]
    else:
        candidates = [DEFAULT_FILE, Path(__file__).resolve().parents[1] / DEFAULT_FILE]
    for c in candidates:
        if c.is_file():
            return c
    raise ConfigError(f"no deployment file at {', '.join(str(c) for c in candidates)}; pass "
                      "--file PATH to pit's infra/prefect.yaml (it ships in the repository)",
                      source="pit deploy")


def load_file(path: Path) -> PrefectFile:
    try:
        data = yaml.safe_load(path.read_text())
        return PrefectFile.model_validate(data or {})
    except yaml.YAMLError as e:
        raise ConfigError(f"not valid YAML: {e}", source=str(path)) from None
    except ValidationError as e:
        raise ConfigError([f"{'.'.join(map(str, err['loc']))}: {err['msg']}"
                           for err in e.errors()], source=str(path)) from None


def _template(pool: PoolSpec, folder: Path) -> dict[str, Any]:
    if pool.base_job_template:
        path = folder / pool.base_job_template
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"work pool {pool.name}: cannot read its base job template "
                              f"{path}: {e}", source="pit deploy") from None
    if pool.type == "process":
        from prefect.workers.process import ProcessWorker

        return ProcessWorker.get_default_base_job_template()
    raise ConfigError(f"work pool {pool.name} of type {pool.type} needs a base_job_template "
                      "file", source="pit deploy")


def _ensure_pools(client: Any, spec: PrefectFile, folder: Path) -> list[str]:
    from prefect.client.schemas.actions import WorkPoolCreate

    names = []
    for pool in spec.pit.work_pools:
        client.create_work_pool(
            WorkPoolCreate(name=pool.name, type=pool.type, description=pool.description,
                           base_job_template=_template(pool, folder),
                           concurrency_limit=pool.concurrency_limit),
            overwrite=True)
        names.append(pool.name)
    return names


def _ensure_limits(client: Any, spec: PrefectFile, gpu_slots: int | None) -> dict[str, int]:
    limits = {}
    for lim in spec.pit.concurrency_limits:
        n = gpu_slots if (lim.tag == "gpu" and gpu_slots is not None) else lim.limit
        client.create_concurrency_limit(tag=lim.tag, concurrency_limit=n)  # upserts by tag
        limits[lim.tag] = n
    return limits


ZOMBIE_AUTOMATION = "pit: crash unresponsive flow runs"


def _ensure_zombie_automation(client: Any, within_s: int) -> str:
    """Mark Crashed a flow run whose heartbeats stopped (its pod evicted, its machine gone).

    Without it such a run stays Running forever; with it, the comparison that
    started it starts it again (`flows.fanout`). Workers emit the heartbeats
    when PREFECT_FLOWS_HEARTBEAT_FREQUENCY is set, which the deployments'
    job variables do.
    """
    from datetime import timedelta

    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    automation = AutomationCore(
        name=ZOMBIE_AUTOMATION,
        description="A flow run that sent no heartbeat and reached no final state within "
        f"{within_s} s of its last heartbeat is marked Crashed.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed",
                    "prefect.flow-run.Failed", "prefect.flow-run.Cancelled",
                    "prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1,
            within=timedelta(seconds=within_s)),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message="No heartbeat: its worker, pod or machine is gone.")],
    )
    existing = client.read_automations_by_name(ZOMBIE_AUTOMATION)
    if existing:
        client.update_automation(existing[0].id, automation)
        return str(existing[0].id)
    return str(client.create_automation(automation))


def _flow(entrypoint: str) -> Any:
    from prefect.flows import load_flow_from_entrypoint

    try:
        return load_flow_from_entrypoint(entrypoint, use_placeholder_flow=False)
    except Exception as e:  # an import error in the flow's module, a wrong name
        raise ConfigError(f"entrypoint {entrypoint!r} does not load a flow: {e}. Entrypoints "
                          "are module paths of the installed package, e.g. "
                          "flows.compare.compare_methods", source="pit deploy") from None


def _deployment(d: DeploymentSpec) -> Any:
    from prefect.client.schemas.objects import ConcurrencyLimitConfig
    from prefect.schedules import Cron
    from prefect.types.entrypoint import EntrypointType

    concurrency = (ConcurrencyLimitConfig(limit=d.concurrency_limit.limit,
                                          collision_strategy=d.concurrency_limit.collision_strategy)
                   if d.concurrency_limit else None)
    return _flow(d.entrypoint).to_deployment(
        name=d.name, description=d.description, tags=d.tags, parameters=d.parameters,
        schedules=[Cron(s.cron, timezone=s.timezone, active=s.active) for s in d.schedules],
        concurrency_limit=concurrency, work_queue_name=d.work_pool.work_queue_name,
        job_variables=d.work_pool.job_variables,
        enforce_parameter_schema=d.enforce_parameter_schema,
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def deploy(path: str | os.PathLike[str] | None = None, pool: str | None = None,
           gpu_slots: int | None = None) -> dict[str, Any]:
    """Create or update pools, limits and deployments on the server of PREFECT_API_URL.

    `pool` sends every deployment to that work pool instead of the file's
    (say, the Kubernetes GPU pool on a cluster); `gpu_slots` sets the `gpu`
    tag limit to the number of accelerators the workers share.
    """
    if not os.environ.get("PREFECT_API_URL"):
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():
            raise PitError("pit deploy registers deployments on a Prefect server: set "
                           "PREFECT_API_URL, e.g. export PREFECT_API_URL=http://127.0.0.1:4200/api "
                           "(the address `pit ui` prints)")
    file = find_file(path)
    spec = load_file(file)
    pools = {p.name for p in spec.pit.work_pools}
    if pool is not None and pool not in pools:
        raise ConfigError(f"--pool {pool!r} is not a work pool of {file}; its pools: "
                          f"{', '.join(sorted(pools))}", source="pit deploy")
    deployments = [(_deployment(d), pool or d.work_pool.name) for d in spec.deployments]
    import httpx
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            client.hello()
            created = _ensure_pools(client, spec, file.parent)
            limits = _ensure_limits(client, spec, gpu_slots)
            if spec.pit.crash_unresponsive_after_s:
                _ensure_zombie_automation(client, spec.pit.crash_unresponsive_after_s)
        registered = {}
        for (dep, pool_name), d in zip(deployments, spec.deployments, strict=True):
            registered[f"{dep.flow_name}/{d.name}"] = str(dep.apply(work_pool_name=pool_name))
    except httpx.TransportError as e:
        from prefect.settings import PREFECT_API_URL

        raise TransientError(f"cannot reach the Prefect server at {PREFECT_API_URL.value()} "
                             f"({e}); start it (`pit ui`) or fix PREFECT_API_URL") from None
    return {"file": str(file), "work_pools": created, "concurrency_limits": limits,
            "deployments": registered}
