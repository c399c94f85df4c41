-- Runs once, on an empty data volume: Prefect uses POSTGRES_DB (prefect), MLflow this one.
CREATE DATABASE mlflow;
