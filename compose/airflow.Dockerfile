# The Airflow image of docker-compose.yaml: the official apache/airflow:3.3.2 image plus what the
# modelwatch DAG imports at run time, at the versions of requirements.lock (a test checks they agree).
#
# Built once (`docker compose up -d --build`) instead of `_PIP_ADDITIONAL_REQUIREMENTS`, which the
# official compose file reserves for quick checks: that variable reinstalls the packages at EVERY start of
# EVERY Airflow container (five of them here; mlflow alone takes about a minute), needs the index on every
# start, and can resolve differently from one start to the next.
FROM apache/airflow:3.3.2

COPY compose/requirements-airflow.txt /requirements-airflow.txt
# Pinning apache-airflow to the image's own version keeps pip from moving Airflow while it resolves
# (the pattern of https://airflow.apache.org/docs/docker-stack/build.html).
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /requirements-airflow.txt

# modelwatch itself, as any user installs it: the provider entry point registers its connection types,
# and the DAG files import it like any library. --no-deps: its dependencies are the pins above.
COPY --chown=airflow:0 pyproject.toml README.md /opt/modelwatch/
COPY --chown=airflow:0 src /opt/modelwatch/src
RUN pip install --no-cache-dir --no-deps /opt/modelwatch
