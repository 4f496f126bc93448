# syntax=docker/dockerfile:1
# Airflow 3 with this project installed: the image of every Airflow service in
# docker-compose.yaml (and of the MLflow tracking server there, which needs psycopg2 too).
#   docker build -f docker/airflow.Dockerfile -t ctcd-airflow .
FROM apache/airflow:3.3.2-python3.11

# requirements.txt is the runtime list (no test, lint or docs tools: those are in
# requirements-dev.txt); it pins apache-airflow==3.3.2 itself, so nothing the base image holds
# moves.
COPY --chown=airflow:0 requirements.txt /opt/ctcd/requirements.txt
RUN pip install --no-cache-dir -r /opt/ctcd/requirements.txt

# The project, editable from /opt/ctcd: its code finds include/ beside plugins/ (as in a
# checkout), and docker-compose.yaml may mount a working copy over dags/, plugins/, include/.
COPY --chown=airflow:0 pyproject.toml README.md /opt/ctcd/
COPY --chown=airflow:0 plugins /opt/ctcd/plugins
COPY --chown=airflow:0 dags /opt/ctcd/dags
COPY --chown=airflow:0 include /opt/ctcd/include
RUN pip install --no-cache-dir --no-deps --editable /opt/ctcd \
    && python -m compileall -q /opt/ctcd/plugins /opt/ctcd/dags \
    && python -c "import ctcd.airflow_plugin, ctcd.serving.server" \
    && mkdir -p /opt/airflow/ctcd /opt/airflow/mlartifacts

ENV AIRFLOW__CORE__DAGS_FOLDER=/opt/ctcd/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/ctcd/plugins \
    CTCD_HOME=/opt/airflow/ctcd
# The base image's airflow user (uid 50000, group 0).
USER 50000:0
