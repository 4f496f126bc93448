-- Run once by the postgres image on an empty volume: MLflow's backend store beside Airflow's DB.
CREATE DATABASE mlflow OWNER airflow;
