# MLflow tracking server for pit: the official image plus a Postgres driver (backend
# store) and boto3 (artifacts proxied to S3 / MinIO). The tag matches the worker's client.
#
#   docker build -f docker/mlflow.Dockerfile -t pit-mlflow:3.17.0 docker
FROM ghcr.io/mlflow/mlflow:v3.17.0

ARG PSYCOPG2_VERSION=2.9.13
ARG BOTO3_VERSION=1.44.8

RUN pip install --no-cache-dir \
        "psycopg2-binary==${PSYCOPG2_VERSION}" \
        "boto3==${BOTO3_VERSION}" \
    && useradd --uid 10002 --user-group --create-home --shell /usr/sbin/nologin mlflow

USER 10002:10002
WORKDIR /home/mlflow

EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request as u; sys.exit(u.urlopen('http://127.0.0.1:5000/health', timeout=4).status != 200)"]

ENTRYPOINT ["mlflow", "server"]
CMD ["--host", "0.0.0.0", "--port", "5000"]
