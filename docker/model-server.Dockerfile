# syntax=docker/dockerfile:1
# The model server (`python -m ctcd.serving`) without Airflow: only requirements-serving.txt.
#   docker build -f docker/model-server.Dockerfile -t ctcd-model-server .
#   docker run -p 8080:8080 -e MLFLOW_TRACKING_URI=http://mlflow:5000 ctcd-model-server \
#     --model-uri models:/churn-classifier/3 --model-name churn-classifier --model-version 3
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/ctcd
COPY requirements-serving.txt /src/requirements-serving.txt
# The file is the whole closure, exactly pinned: --no-deps keeps anything else out, pip check
# proves nothing is missing.
RUN /opt/ctcd/bin/pip install --no-deps -r /src/requirements-serving.txt \
    && /opt/ctcd/bin/pip check
COPY pyproject.toml README.md /src/
COPY plugins /src/plugins
RUN /opt/ctcd/bin/pip install --no-deps /src \
    && /opt/ctcd/bin/python -c "import ctcd.serving.server"

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 ctcd \
    && useradd --system --uid 10001 --gid ctcd --home-dir /var/lib/ctcd --create-home ctcd
COPY --from=build /opt/ctcd /opt/ctcd
ENV PATH=/opt/ctcd/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CTCD_HOME=/var/lib/ctcd \
    CTCD_SERVER_HOST=0.0.0.0 \
    CTCD_SERVER_PORT=8080
USER 10001:10001
WORKDIR /var/lib/ctcd
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/v2/health/ready' % os.environ.get('CTCD_SERVER_PORT', '8080'), timeout=2)"]
ENTRYPOINT ["python", "-m", "ctcd.serving"]
