"""The embedded stack behind `make demo`: Airflow 3 and MLflow as local processes."""
