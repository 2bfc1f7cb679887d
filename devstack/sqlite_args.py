"""SQLAlchemy connect args of the local Airflow's SQLite database (``[database] sql_alchemy_connect_args``).

Four Airflow processes and their task processes write one SQLite file. sqlite3 waits 5 s for a lock by
default, and a scheduler that gets ``database is locked`` in its loop exits: the runs it had queued then
stay queued. Waiting longer costs nothing when the database is free. A module of its own: Airflow imports
it while configuring itself, before anything else of devstack may be imported.

Only the embedded default (``AirflowConfig(engine="sqlite-local")``: ``make up``, ``make demo``) uses it;
on ``postgres-celery`` (the e2e tier) no component is given these args, and PostgreSQL's row locks need no
such wait (tests/unit/test_airflow_engine.py checks both).
"""

CONNECT_ARGS = {"timeout": 60}

#: The API server's: it serves the REST and execution APIs in one process, and one of its requests can wait
#: for a lock held by another of its own sessions (the audit log is written in a session of its own while the
#: request's session holds the write lock): every wait there is a stall of its callers until the timeout
#: (seen in CI: POST /api/v2/backfills and a task's rtif PUT both stuck 60 s, then HTTP 500). A short wait
#: turns that into a quick 503/500 that the REST client of devstack repeats (``AirflowApi.request``).
API_SERVER_CONNECT_ARGS = {"timeout": 5}
