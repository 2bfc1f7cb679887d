"""The model-health view's permissions through the real API server, with the FAB auth manager's per-DAG
permissions and real logins (issue 20 item 3).

The session's Airflow (``airflow`` fixture) runs the simple auth manager, which knows no per-DAG permissions:
this module starts one more API server only (no scheduler), on its own metadata database and lake, with the
FAB auth manager, and creates two roles the way an operator does in the UI's security pages:

- ``team``: read "DAG Runs" and "DAG:team_dag" only (a team with a DAG of its own, no modelwatch DAG);
- ``monitoring``: read "DAG Runs" and "DAG:model_performance_monitoring".

The lake holds a day written by the daily DAG (its verdict document names it) and an hour written by the
hourly DAG, both written through :class:`modelwatch.storage.Lake` as the tasks write them. About 35 s on two
cores (migrate, the roles, the API server's start).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from urllib.parse import quote

import pytest
from http_helpers import http_get

from devstack.airflow_services import AirflowApi, AirflowConfig, airflow_binary, free_port
from devstack.processes import stop_session_leader
from devstack.stack import DEFAULT_PORTS
from modelwatch.monitoring_dag import DAILY_DAG_ID, HOURLY_DAG_ID
from modelwatch.report import REPORTS, file_stem, relative_path
from modelwatch.storage import Lake
from modelwatch.window import Window

pytestmark = pytest.mark.e2e

FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
DAY = date(2026, 3, 3)
HOUR = Window(datetime(2026, 3, 4, 10, tzinfo=UTC), datetime(2026, 3, 4, 11, tzinfo=UTC))
MODEL = "fraud-detector"
ODD_MODEL = "team/fraud 50%?#ü"
ROLES = {
    "team": [["can_read", "DAG Runs"], ["can_read", "DAG:team_dag"]],
    "monitoring": [["can_read", "DAG Runs"], ["can_read", f"DAG:{DAILY_DAG_ID}"]],
}
USERS = {"team_user": "team", "monitoring_user": "monitoring"}
START_TIMEOUT = 180.0

# Runs in the API server's environment: the roles and users, through FAB's own security manager (what the
# UI's "Security" pages and `airflow roles`/`airflow users` call).
_SETUP = """
import json, sys
from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder
spec = json.loads(sys.stdin.read())
with get_application_builder() as appbuilder:
    sm = appbuilder.sm
    for name, perms in spec["roles"].items():
        role = sm.find_role(name) or sm.add_role(name)
        for action, resource in perms:
            if not sm.get_resource(resource):
                sm.create_resource(resource)
            sm.add_permission_to_role(role, sm.create_permission(action, resource))
    for user, (password, role) in spec["users"].items():
        assert sm.add_user(user, user, "e2e", user + "@example.invalid", [sm.find_role(role)], password), user
"""


@dataclass
class FabAirflow:
    base_url: str
    lake: Lake
    passwords: dict[str, str]

    def token(self, user: str) -> str:
        return AirflowApi(self.base_url, user, self.passwords[user]).token()

    def get(self, path: str, user: str = "") -> tuple[int, str]:
        """(status, body) of ``GET path``, as ``user`` (a bearer token of a real login) or without a login."""
        return http_get(self.base_url + path, self.token(user) if user else "")


def _seed(lake: Lake) -> None:
    """A day of the daily DAG and an hour of the hourly DAG, as their tasks store them."""
    day = Window.of_day(DAY)
    verdicts = [{"model": m, "verdict": "degraded", "quality": "ok", "drift": "stable", "reason": "cpu"}
                for m in (MODEL, ODD_MODEL)]  # fmt: skip
    lake.write_document("verdicts", day, "verdict", {"dag_id": DAILY_DAG_ID, "verdicts": verdicts})
    lake.replace_files(REPORTS, day, {f"{file_stem(m)}.html": f"<html>report of {m}</html>".encode()
                                      for m in (MODEL, ODD_MODEL)})  # fmt: skip
    lake.write_document("verdicts", HOUR, "verdict", {"dag_id": HOURLY_DAG_ID, "verdicts": verdicts[:1]})
    lake.replace_files(REPORTS, HOUR, {f"{file_stem(MODEL)}.html": b"<html>hourly report</html>"})


@pytest.fixture(scope="module")
def fab_airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FabAirflow]:
    """An API server with the FAB auth manager, its two roles and users, over a seeded lake."""
    pytest.importorskip("airflow.providers.fab", reason="apache-airflow-providers-fab is in requirements.lock")
    state = tmp_path_factory.mktemp("airflow-fab")
    cfg = AirflowConfig(state_dir=state, port=free_port(avoid=DEFAULT_PORTS.values()), extra_env={
        "AIRFLOW__CORE__AUTH_MANAGER": FAB_AUTH_MANAGER,
        "AIRFLOW__API_AUTH__JWT_SECRET": os.urandom(48).hex(),
        "AIRFLOW__API__SECRET_KEY": os.urandom(24).hex(),
    })  # fmt: skip
    cfg.home.mkdir(parents=True)
    env = {**os.environ, **cfg.env()}
    exe = airflow_binary()
    migrate = subprocess.run([exe, "db", "migrate"], env=env, cwd=cfg.home, capture_output=True, timeout=300,
                             check=False)  # fmt: skip
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
    passwords = {user: os.urandom(12).hex() for user in USERS}
    spec = {"roles": ROLES, "users": {u: [passwords[u], role] for u, role in USERS.items()}}
    setup = subprocess.run([sys.executable, "-c", _SETUP], input=json.dumps(spec).encode(), env=env, cwd=cfg.home,
                           capture_output=True, timeout=300, check=False)  # fmt: skip
    assert setup.returncode == 0, setup.stdout[-3000:] + setup.stderr[-3000:]
    assert cfg.lake_url is not None
    lake = Lake(cfg.lake_url)
    _seed(lake)
    log = (state / "api-server.log").open("wb")
    proc = subprocess.Popen([exe, "api-server", "--host", "127.0.0.1", "--port", str(cfg.port), "--workers", "1"],
                            env=env, cwd=cfg.home, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert proc.poll() is None, (state / "api-server.log").read_text()[-3000:]
            try:
                AirflowApi.get_health(cfg.base_url, timeout=2)
                break
            except (OSError, ValueError):
                assert time.monotonic() < deadline, (state / "api-server.log").read_text()[-3000:]
                time.sleep(0.5)
        yield FabAirflow(cfg.base_url, lake, passwords)
    finally:
        stop_session_leader(proc)
        log.close()


def _daily_report(fab: FabAirflow, model: str = MODEL) -> str:
    return f"/modelwatch/lake/{quote(relative_path(fab.lake, Window.of_day(DAY), model), safe='/=')}"


def _hourly_report(fab: FabAirflow) -> str:
    return f"/modelwatch/lake/{quote(relative_path(fab.lake, HOUR, MODEL), safe='/=')}"


def test_a_user_of_another_dag_is_refused_whatever_dag_id_it_names(fab_airflow: FabAirflow) -> None:
    fab = fab_airflow
    paths = ["/modelwatch/", "/modelwatch/?dag_id=team_dag", f"/modelwatch/day/{DAY}?model={MODEL}",
             f"/modelwatch/day/{DAY}/{MODEL}", f"/modelwatch/day/{DAY}/{MODEL}?dag_id=team_dag", _daily_report(fab),
             f"{_daily_report(fab)}?dag_id=team_dag", _hourly_report(fab), f"/modelwatch/run/{DAILY_DAG_ID}/r1"]  # fmt: skip
    got = {p: fab.get(p, "team_user")[0] for p in paths}
    assert got == dict.fromkeys(paths, 403), got
    # the same login reads its own DAG's runs through Airflow's REST API (the role works; the view refuses)
    status, _ = fab.get("/api/v2/dags/team_dag/dagRuns", "team_user")
    assert status != 403, status


def test_a_reader_of_the_daily_dag_opens_its_days_and_reports(fab_airflow: FabAirflow) -> None:
    fab = fab_airflow
    status, page = fab.get(_daily_report(fab), "monitoring_user")
    assert status == 200 and f"report of {MODEL}" in page, (status, page[:300])
    status, page = fab.get(f"/modelwatch/day/{DAY}?model={quote(ODD_MODEL, safe='')}", "monitoring_user")
    assert status == 200 and f"report of {ODD_MODEL}" in page, (status, page[:300])
    status, calendar = fab.get("/modelwatch/", "monitoring_user")
    assert status == 200 and MODEL in calendar and str(DAY)[5:] in calendar, (status, calendar[:300])
    assert "file://" not in calendar and fab.lake.base_url not in calendar
    # the hourly DAG's hour is not theirs
    assert fab.get(_hourly_report(fab), "monitoring_user")[0] == 403


def test_the_plugins_api_docs_are_not_served(fab_airflow: FabAirflow) -> None:
    for path in ("/modelwatch/openapi.json", "/modelwatch/docs", "/modelwatch/redoc"):
        assert fab_airflow.get(path)[0] in (401, 404), path
        assert fab_airflow.get(path, "monitoring_user")[0] == 404, path
    assert fab_airflow.get("/modelwatch/")[0] == 401
