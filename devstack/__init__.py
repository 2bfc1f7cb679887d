"""Development tooling for modelwatch: the local real stack (:mod:`devstack.stack`) and its seeding.

Not shipped to Airflow. ``make demo``, ``make stack-up``/``make stack-down`` and the pytest session
fixtures all go through :class:`devstack.stack.Stack`; see ``devstack/CONTRACT.md``.

Why it exists: these machines and CI have no Docker engine, so docker-compose.yaml cannot host the tests'
real stack. The same servers run here as plain 127.0.0.1 processes from Debian packages (Prometheus,
Alertmanager, node-exporter) and PyPI (``mlflow server``, ``moto_server``, aiosmtpd, Airflow's own
commands); devstack only starts, seeds and stops them.
"""
