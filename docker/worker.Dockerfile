# GPU worker for pit: a Prefect worker that runs flow runs (compose: a process worker;
# Kubernetes: the worker and the image of every flow-run Job).
#
#   docker build -f docker/worker.Dockerfile -t pit-worker:0.1.0 .
#
# torch comes from the PyTorch CUDA 12.8 index to match the base image (host driver 570 or
# newer); PyPI's default Linux wheel of recent torch releases targets CUDA 13 (driver 580+).
# Prefect, prefect-kubernetes and MLflow are pinned to the servers of docker/compose.yaml.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ARG TORCH_VERSION=2.11.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG PREFECT_VERSION=3.8.5
ARG PREFECT_KUBERNETES_VERSION=0.8.0
ARG MLFLOW_VERSION=3.17.0

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/pit \
    PATH=/opt/pit/bin:$PATH \
    HF_HOME=/home/pit/.cache/huggingface \
    PIT_PROGRESS=0 \
    PIT_POOL=pit-process \
    PIT_WORKER_TYPE=process \
    PREFECT_WORKER_WEBSERVER_PORT=8080

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Ubuntu's archive keeps only the newest build of a package, so exact apt pins break the
# next rebuild; the base image tag fixes the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates python3 python3-venv tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 pit \
    && useradd --uid 10001 --gid pit --create-home --shell /usr/sbin/nologin pit \
    && install -d -o pit -g pit /home/pit/.cache

RUN python3 -m venv "$VIRTUAL_ENV" \
    && pip install --index-url "$TORCH_INDEX_URL" "torch==${TORCH_VERSION}"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY pit ./pit
COPY tasks ./tasks
COPY flows ./flows
RUN printf 'torch==%s\n' "$TORCH_VERSION" > /tmp/torch.txt \
    && pip install --constraint /tmp/torch.txt . \
        "prefect==${PREFECT_VERSION}" \
        "prefect-kubernetes==${PREFECT_KUBERNETES_VERSION}" \
        "mlflow==${MLFLOW_VERSION}" \
    && rm -rf /src /tmp/torch.txt \
    && python -c "import pit, flows, tasks, torch, prefect_kubernetes"

USER 10001:10001
WORKDIR /home/pit

EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request as u; sys.exit(u.urlopen('http://127.0.0.1:8080/health', timeout=4).status != 200)"]

# tini reaps the flow-run processes the worker starts and forwards SIGTERM to it. Flow-run
# Jobs on Kubernetes replace CMD with `prefect flow-run execute`, so the entry stays generic.
ENTRYPOINT ["tini", "--"]
CMD ["sh", "-c", "exec prefect worker start --pool \"$PIT_POOL\" --type \"$PIT_WORKER_TYPE\" --with-healthcheck"]
