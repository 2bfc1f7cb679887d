"""SQLAlchemy connect args of the local Airflow's SQLite database (``[database] sql_alchemy_connect_args``).

Four Airflow processes and their task processes write one SQLite file. sqlite3 waits 5 s for a lock by
default, and a scheduler that gets ``database is locked`` in its loop exits: the runs it had queued then
stay queued. Waiting longer costs nothing when the database is free. A module of its own: Airflow imports
it while configuring itself, before anything else of devstack may be imported.
"""

CONNECT_ARGS = {"timeout": 60}
