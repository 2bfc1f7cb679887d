# The sample model service of docker-compose.yaml: python:3.11 with what devstack/model_service.py imports,
# at the versions of requirements.lock (a test checks they agree). The service file itself is mounted
# read-only by docker-compose.yaml (like the webhook receiver), so the image holds dependencies only.
FROM python:3.11.13-slim

COPY requirements-model-service.txt /requirements-model-service.txt
RUN pip install --no-cache-dir -r /requirements-model-service.txt
# One BLAS/OpenMP thread: the forest does not use them.
ENV OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONUNBUFFERED=1
