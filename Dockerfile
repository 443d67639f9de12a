# The official Airflow image with this provider installed, for docker-compose.yaml (and a starting point for
# your own image). Build: docker compose build  (or: docker build -t airflow-provider-dune:local .)
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.12
FROM ${AIRFLOW_IMAGE}

COPY --chown=airflow:0 pyproject.toml README.md /opt/provider/
COPY --chown=airflow:0 airflow_provider_dune /opt/provider/airflow_provider_dune
# Pin the image's own Airflow so that installing the provider never upgrades or downgrades it. The secrets
# folder is created here so that the named volume mounted on it belongs to the airflow user.
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" /opt/provider \
    && mkdir -p /opt/airflow/secrets
