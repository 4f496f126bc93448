"""The workflow steps each DAG calls: plain functions, free of Airflow, tested directly."""
