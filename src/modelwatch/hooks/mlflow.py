"""MLflow tracking server hook: experiments, paged run search, metric history, Parquet artifacts.

One request path: every call is a request to MLflow's REST API through
:meth:`~modelwatch.hooks.base.ApiHook._request`, the one retry/backoff/redaction policy the Prometheus and
Alertmanager hooks use, and every answer is the server's JSON as plain dicts (no MLflow entity objects).
Credentials live in the hook's own :class:`requests.Session`: nothing is written to ``os.environ``, and the
``mlflow`` package is never imported here (tests and the devstack use it to write runs).

Endpoints (MLflow 3.17 tracking server):

- ``GET /api/2.0/mlflow/experiments/get-by-name``: experiment ids;
- ``POST /api/2.0/mlflow/runs/search``: runs, every ``next_page_token`` followed;
- ``GET /api/2.0/mlflow/metrics/get-history``: metric points, paged (``max_results``/``page_token``);
- one artifact file of a run, by its ``artifact_uri``: ``GET /api/2.0/mlflow-artifacts/artifacts/<path>``
  (the server's artifact proxy, which serves only ``mlflow-artifacts:/`` roots) for a run under
  ``mlflow-artifacts:/``; otherwise ``GET /get-artifact?path=...&run_uuid=...``, which the server answers
  from the run's root whatever it is (a folder of the server, as the devstack's ``--default-artifact-root``,
  or an object store it can reach) after looking the run up in its database. Either way the hook needs no
  storage credentials of its own;
- ``GET /api/2.0/mlflow/artifacts/list``: whether a run still ``RUNNING`` has uploaded its file yet.
"""

from __future__ import annotations

import json
import math
import posixpath
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote, urlsplit

import requests

from modelwatch import connections
from modelwatch.errors import MlflowSourceError, MlflowSourceRefused, UpstreamUnavailable, is_refusal
from modelwatch.hooks.base import ApiHook, as_bool, connection_url, new_session

if TYPE_CHECKING:
    import pyarrow as pa

#: The server refuses larger pages of runs/search.
MAX_PAGE_SIZE = 50_000
#: Metric points per ``metrics/get-history`` request (MLflow's own client asks for the same).
HISTORY_PAGE_SIZE = 25_000
#: REST endpoints.
EXPERIMENT_BY_NAME_PATH = "/api/2.0/mlflow/experiments/get-by-name"
SEARCH_RUNS_PATH = "/api/2.0/mlflow/runs/search"
METRIC_HISTORY_PATH = "/api/2.0/mlflow/metrics/get-history"
LIST_ARTIFACTS_PATH = "/api/2.0/mlflow/artifacts/list"
GET_ARTIFACT_PATH = "/get-artifact"
PROXY_ARTIFACTS_PATH = "/api/2.0/mlflow-artifacts/artifacts"
#: Order of every run search: run_uuid is the server's own tie-breaker, so offset page tokens stay stable.
SEARCH_ORDER = ("attributes.start_time ASC",)
#: Retry policy when the connection has no ``max_retries``/``backoff_factor``/``timeout`` extra: MLflow's
#: own client defaults (``MLFLOW_HTTP_REQUEST_*``), which deployments of this hook were set up against.
DEFAULT_MAX_RETRIES = 7
DEFAULT_BACKOFF_FACTOR = 2.0
DEFAULT_TIMEOUT_SECONDS = 120.0
#: Artifact downloads in flight at once (I/O bound).
DOWNLOAD_WORKERS = 8
#: MLflow error codes that say the request itself is wrong: retrying the task cannot help.
REFUSAL_CODES = frozenset({
    "INVALID_PARAMETER_VALUE", "BAD_REQUEST", "RESOURCE_DOES_NOT_EXIST", "PERMISSION_DENIED", "UNAUTHENTICATED",
})
_MISSING = "RESOURCE_DOES_NOT_EXIST"


def _started_in(start_ms: int, end_ms: int) -> str:
    """Search filter: runs that started in ``[start_ms, end_ms)``."""
    return f"attributes.start_time >= {int(start_ms)} AND attributes.start_time < {int(end_ms)}"


def _run_times(run: Mapping[str, Any]) -> tuple[int, int | None]:
    """``(start_time, end_time)`` of a run's JSON: an unset start is 0 and an unset (or 0) end ``None``,
    as MLflow reads its own protos."""
    info = run.get("info") or {}
    return int(info.get("start_time") or 0), int(info.get("end_time") or 0) or None


def _run_id(run: Mapping[str, Any]) -> str:
    info = run.get("info") or {}
    return str(info.get("run_id") or info.get("run_uuid") or "")


def _artifact_request(run: Mapping[str, Any], path: str) -> tuple[str, dict[str, Any]]:
    """Where to GET the artifact ``path`` of a run: the server's artifact proxy for a run under
    ``mlflow-artifacts:/`` (served straight from the proxy's store), else ``/get-artifact`` (the server looks
    the run up and reads its root)."""
    info = run.get("info") or {}
    root = urlsplit(str(info.get("artifact_uri") or ""))
    if root.scheme == "mlflow-artifacts" and not root.netloc:
        where = posixpath.join(root.path.strip("/"), path)
        return f"{PROXY_ARTIFACTS_PATH}/{quote(where)}", {}
    return GET_ARTIFACT_PATH, {"params": {"path": path, "run_uuid": _run_id(run)}}


class MlflowHook(ApiHook):
    """Read runs, metric histories and run artifacts from an MLflow tracking server over its REST API.

    Connection: ``host`` (a full tracking URI when it contains ``://``), ``port``, ``schema`` (URL scheme,
    default ``http``); ``password`` with ``login`` is HTTP basic auth, ``password`` alone a bearer token.
    Extras (:data:`modelwatch.connections.MLFLOW_FIELDS`): ``max_retries`` (``max_retries + 1`` attempts per
    request), ``backoff_factor`` (seconds before the first retry, doubled per retry, at most 30 s; longer
    when the server sends ``Retry-After``), ``timeout`` (seconds per request, rounded up), ``insecure_tls``;
    MLflow's client defaults (7, 2 s, 120 s) when absent. Transport failures, 408, 429 and 5xx are retried;
    other answers are final.

    :param mlflow_conn_id: Airflow connection id.
    :param logger_name: see :class:`airflow.sdk.BaseHook`.
    :raises MlflowSourceError: from every call: naming the server (credentials removed), the experiment
        and what went wrong, credentials redacted; :class:`MlflowSourceRefused` (no Airflow retries) when the
        server refused the request itself.
    """

    conn_name_attr: ClassVar[str] = "mlflow_conn_id"
    default_conn_name: ClassVar[str] = "mlflow_default"
    conn_type: ClassVar[str] = connections.MLFLOW
    hook_name: ClassVar[str] = "MLflow"
    service_name: ClassVar[str] = "MLflow"
    # The cheapest authenticated call of the tracking API.
    test_request: ClassVar[tuple[str, str, dict[str, Any]]] = (
        "GET", "/api/2.0/mlflow/experiments/search", {"params": {"max_results": 1}}
    )

    def __init__(self, mlflow_conn_id: str = default_conn_name, *, logger_name: str | None = None) -> None:
        super().__init__(
            mlflow_conn_id,
            max_attempts=1 + DEFAULT_MAX_RETRIES,
            backoff_base_seconds=DEFAULT_BACKOFF_FACTOR,
            logger_name=logger_name,
        )
        self.mlflow_conn_id = self.conn_id
        self._timeout = DEFAULT_TIMEOUT_SECONDS
        #: Runs per page of every run search of this hook, in order.
        self.pages_read: list[int] = []

    # -- connection -------------------------------------------------------------------------------

    @property
    def tracking_uri(self) -> str:
        """The tracking server URI, credentials removed (resolves the connection)."""
        return self.base_url

    def get_conn(self) -> requests.Session:
        """Resolve the MLflow connection (once): base URL, retry policy from the extras, and a
        :class:`requests.Session` carrying the credentials.

        :raises MlflowSourceError: when the connection has no host.
        """
        if self._session is not None:
            return self._session
        conn = self.get_connection(self.conn_id)
        extra: Mapping[str, Any] = conn.extra_dejson or {}
        uri = connection_url(conn)
        if not uri:
            raise MlflowSourceError(f"connection {self.conn_id!r}", "the connection has no host")
        retries, backoff, timeout = extra.get("max_retries"), extra.get("backoff_factor"), extra.get("timeout")
        self.max_attempts = 1 + (DEFAULT_MAX_RETRIES if retries is None else max(0, math.ceil(float(retries))))
        self.backoff_base_seconds = DEFAULT_BACKOFF_FACTOR if backoff is None else float(backoff)
        # whole seconds, as MLflow's client read the same extra
        self._timeout = DEFAULT_TIMEOUT_SECONDS if timeout is None else float(math.ceil(float(timeout)))

        self._add_url_secrets(uri)
        session = new_session()
        if as_bool(extra.get("insecure_tls")) is True:
            session.verify = False
        if conn.password:
            if conn.login:
                # base64(login:password) and the password's other forms become secrets there
                self._set_basic_auth(session, conn.login, conn.password)
            elif conn.password.strip():
                self._set_bearer(session, conn.password, field="password, a token without login")
            else:
                self._add_secret(conn.password)
        self._add_header_secrets(session)
        self._base_url = uri
        self._session = session
        self.log.debug("MLflow connection %r: %s", self.conn_id, self.base_url)
        return session

    def _send(self, method: str, path: str, *, what: str, experiment: str | None, **kwargs: Any) -> requests.Response:
        """One request through :meth:`_request` (retries included); a transport failure as MlflowSourceError."""
        started = time.monotonic()
        try:
            return self._request(method, path, **kwargs)
        except UpstreamUnavailable as exc:
            raise MlflowSourceError(
                self.tracking_uri,
                f"{what} failed after {exc.attempts} attempt(s), {time.monotonic() - started:.1f} s: {exc.last_error}",
                experiment=experiment,
            ) from None

    def _failure(
        self, response: requests.Response, answer: Any, *, what: str, experiment: str | None, started: float
    ) -> MlflowSourceError:
        """The error of an answer that is not what was asked: HTTP status, MLflow's error code and message
        (or the start of the body), redacted; a refusal when no retry can help."""
        code = answer.get("error_code") if isinstance(answer, dict) else None
        message = answer.get("message") if isinstance(answer, dict) else None
        text = self.redact(str(message)) if message else self.body_excerpt(response) or "(empty body)"
        status = f"HTTP {response.status_code}" + (f" {code}" if code else "")
        if response.status_code == 200:
            status += ", not an MLflow JSON object"
        refused = code in REFUSAL_CODES or is_refusal(response.status_code)
        kind = MlflowSourceRefused if refused else MlflowSourceError
        reason = f"{what} failed after {time.monotonic() - started:.1f} s ({status}): {text}"
        return kind(self.tracking_uri, reason, experiment=experiment)

    def _json(
        self, method: str, path: str, *, what: str, experiment: str | None, allow_missing: bool = False, **kwargs: Any
    ) -> dict[str, Any] | None:
        """Send a request and decode its JSON object.

        :param allow_missing: answer ``None`` for MLflow's ``RESOURCE_DOES_NOT_EXIST`` instead of raising.
        :raises MlflowSourceError: on any other answer than HTTP 200 with a JSON object.
        """
        started = time.monotonic()
        response = self._send(method, path, what=what, experiment=experiment, **kwargs)
        try:
            answer = json.loads(response.content)
        except ValueError:
            answer = None
        if response.status_code == 200 and isinstance(answer, dict):
            return answer
        if allow_missing and isinstance(answer, dict) and answer.get("error_code") == _MISSING:
            return None
        raise self._failure(response, answer, what=what, experiment=experiment, started=started)

    def _list(self, answer: Mapping[str, Any], key: str, *, what: str, experiment: str | None) -> list[Any]:
        """``answer[key]``, a list (the server leaves an empty list out)."""
        value = answer.get(key) or []
        if not isinstance(value, list):
            raise MlflowSourceError(
                self.tracking_uri, f"{what} answered {key!r} of type {type(value).__name__}", experiment=experiment
            )
        return value

    # -- API --------------------------------------------------------------------------------------

    def experiment_ids(self, names: Sequence[str]) -> dict[str, str]:
        """Experiment ids by name (``experiments/get-by-name``).

        :param names: experiment names (case-sensitive).
        :raises MlflowSourceRefused: naming an experiment that does not exist (or is deleted) and the server.
        :raises MlflowSourceError: on a server failure or an unreachable server.
        """
        ids: dict[str, str] = {}
        for name in names:
            answer = self._json(
                "GET", EXPERIMENT_BY_NAME_PATH, params={"experiment_name": name},
                what="experiments/get-by-name", experiment=name, allow_missing=True,
            )  # fmt: skip
            if answer is None:
                raise MlflowSourceRefused(self.tracking_uri, "no such experiment", experiment=name)
            experiment = answer.get("experiment") or {}
            if not isinstance(experiment, dict) or not experiment.get("experiment_id"):
                raise MlflowSourceError(
                    self.tracking_uri, "experiments/get-by-name answered no experiment id", experiment=name
                )
            stage = experiment.get("lifecycle_stage", "active")
            if stage != "active":
                raise MlflowSourceRefused(self.tracking_uri, f"experiment is {stage}", experiment=name)
            ids[name] = str(experiment["experiment_id"])
        return ids

    def _search(
        self, experiment_ids: Sequence[str], filter_string: str, page_size: int, experiment: str | None
    ) -> list[dict[str, Any]]:
        """``POST runs/search`` of active runs matching ``filter_string``, oldest first, every page followed."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {page_size}")
        ids = [str(i) for i in experiment_ids]
        name = experiment or ",".join(ids)
        body: dict[str, Any] = {
            "experiment_ids": ids,
            "filter": filter_string,
            "max_results": page_size,
            "order_by": list(SEARCH_ORDER),
            "run_view_type": "ACTIVE_ONLY",
        }
        runs: list[dict[str, Any]] = []
        pages = 0
        started = time.monotonic()
        while True:
            answer = self._json("POST", SEARCH_RUNS_PATH, json=body, what="runs/search", experiment=name)
            assert answer is not None
            page = self._list(answer, "runs", what="runs/search", experiment=name)
            runs.extend(page)
            pages += 1
            self.pages_read.append(len(page))
            token = answer.get("next_page_token")
            if not token:
                break
            body["page_token"] = token
        self.log.info(
            "MLflow runs/search experiment %s filter=%r: %d run(s) in %d page(s), %.3f s",
            name, filter_string, len(runs), pages, time.monotonic() - started,
        )  # fmt: skip
        return runs

    def search_runs_json(
        self,
        experiment_ids: Sequence[str],
        start_ms: int,
        end_ms: int,
        *,
        page_size: int = 1000,
        experiment: str | None = None,
    ) -> list[dict[str, Any]]:
        """Active runs that started in ``[start_ms, end_ms)``, oldest first, as MLflow's REST JSON objects.

        ``POST /api/2.0/mlflow/runs/search``, every ``next_page_token`` followed. Each run is the server's
        JSON: ``{"info": {"run_id", "start_time", ...}, "data": {"metrics": [{"key", "value", ...}], "tags":
        [{"key", "value"}]}}`` (an empty list may be absent; a NaN metric value is the string ``"NaN"``).

        :param experiment_ids: experiment ids (see :meth:`experiment_ids`).
        :param start_ms: window start, epoch milliseconds (inclusive).
        :param end_ms: window end, epoch milliseconds (exclusive).
        :param page_size: runs per request (1..50,000).
        :param experiment: experiment name, for messages (default: the ids).
        :raises MlflowSourceRefused: on a refusal (4xx, or an MLflow error code such as
            ``INVALID_PARAMETER_VALUE``): no retry can help.
        :raises MlflowSourceError: on a server error after the retries, an unreachable server or an
            answer that is not MLflow JSON; naming the experiment and the server, secrets redacted.
        """
        return self._search(experiment_ids, _started_in(start_ms, end_ms), page_size, experiment)

    def search_runs_overlapping(
        self,
        experiment_ids: Sequence[str],
        start_ms: int,
        end_ms: int,
        page_size: int = 1000,
        *,
        experiment: str | None = None,
    ) -> list[dict[str, Any]]:
        """Active runs (REST JSON, as :meth:`search_runs_json`) that overlap ``[start_ms, end_ms)``: started
        before ``end_ms`` and not finished before ``start_ms`` (``end_time`` unset, or at/after
        ``start_ms``). Sorted by start time, run id.

        MLflow's filter has no OR and no ``IS NULL`` on attributes, so this is two searches: finished
        runs with ``end_time >= start_ms``, and runs still ``RUNNING`` (no end time yet); the exact
        condition is re-checked here. A run marked finished without an end time is not found.

        :raises MlflowSourceError: on a server error or an unreachable server.
        """
        before_end = f"attributes.start_time < {int(end_ms)}"
        found: dict[str, dict[str, Any]] = {}
        for flt in (
            f"{before_end} AND attributes.end_time >= {int(start_ms)}",
            f"{before_end} AND attributes.status = 'RUNNING'",
        ):
            for run in self._search(experiment_ids, flt, page_size, experiment):
                start, end = _run_times(run)
                if start >= end_ms or (end is not None and end < start_ms):
                    continue
                found[_run_id(run)] = run
        return sorted(found.values(), key=lambda r: (_run_times(r)[0], _run_id(r)))

    def metric_history(self, run_id: str, key: str, *, experiment: str | None = None) -> list[dict[str, Any]]:
        """Every logged point of metric ``key`` in run ``run_id``: the server's JSON, ``{"key", "value",
        "timestamp", "step"}`` (a NaN value is the string ``"NaN"``), pages of :data:`HISTORY_PAGE_SIZE`
        followed.

        :param experiment: experiment name, for messages.
        :raises MlflowSourceError: on a server error or an unreachable server.
        """
        what = f"metrics/get-history (run {run_id}, key {key!r})"
        params: dict[str, Any] = {"run_id": run_id, "metric_key": key, "max_results": HISTORY_PAGE_SIZE}
        points: list[dict[str, Any]] = []
        started = time.monotonic()
        while True:
            answer = self._json("GET", METRIC_HISTORY_PATH, params=params, what=what, experiment=experiment)
            assert answer is not None
            points.extend(self._list(answer, "metrics", what=what, experiment=experiment))
            token = answer.get("next_page_token")
            if not token:
                break
            params["page_token"] = token
        self.log.debug(
            "MLflow metric history run=%s key=%s: %d point(s), %.3f s",
            run_id, key, len(points), time.monotonic() - started,
        )  # fmt: skip
        return points

    def artifact_exists(self, run_id: str, path: str, *, experiment: str | None = None) -> bool:
        """Whether run ``run_id`` has the artifact file ``path`` (``artifacts/list`` of its folder).

        :raises MlflowSourceError: on a server error or an unreachable server.
        """
        folder = posixpath.dirname(path)
        params = {"run_id": run_id, **({"path": folder} if folder else {})}
        what = f"run {run_id} artifact {path!r}: artifacts/list"
        answer = self._json("GET", LIST_ARTIFACTS_PATH, params=params, what=what, experiment=experiment)
        assert answer is not None
        files = self._list(answer, "files", what=what, experiment=experiment)
        return any(isinstance(f, dict) and f.get("path") == path and not f.get("is_dir") for f in files)

    def read_parquet_artifacts(
        self,
        runs: Sequence[Mapping[str, Any]],
        path: str,
        *,
        experiment: str | None = None,
        workers: int = DOWNLOAD_WORKERS,
    ) -> list[tuple[Mapping[str, Any], pa.Table]]:
        """The Parquet artifact ``path`` of every run, read with pyarrow, in the order of ``runs``.

        Only that one file of each run is downloaded (through the server: its artifact proxy, or
        ``/get-artifact``; see the module's notes), ``workers`` at a time, into memory. A run still ``RUNNING``
        whose folder does not list the file (a batch being written, or a writer that died before uploading) is
        skipped with a warning; a finished run without it is an error.

        :param runs: runs (REST JSON) from :meth:`search_runs_overlapping`.
        :param path: artifact path inside each run (e.g. ``predictions.parquet``).
        :param experiment: experiment name, for messages.
        :param workers: downloads in flight at once.
        :raises MlflowSourceRefused: a finished run without the artifact, or a file that is not Parquet
            (message: experiment, run, artifact path, server).
        :raises MlflowSourceError: a server or storage failure (retryable).
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.get_conn()
        started = time.monotonic()
        sizes: list[int] = []

        def skipped(run_id: str, why: str) -> None:
            self.log.warning(
                "MLflow experiment %s: run %s artifact %r is missing and the run is still RUNNING: skipped (%s)",
                experiment, run_id, path, why,
            )  # fmt: skip

        def one(run: Mapping[str, Any]) -> tuple[Mapping[str, Any], pa.Table] | None:
            run_id = _run_id(run)
            running = (run.get("info") or {}).get("status") == "RUNNING"
            where = f"run {run_id} artifact {path!r}"
            if running and not self.artifact_exists(run_id, path, experiment=experiment):
                skipped(run_id, "not listed")
                return None
            sent = time.monotonic()
            url_path, kwargs = _artifact_request(run, path)
            response = self._send("GET", url_path, what=f"{where}: download", experiment=experiment, **kwargs)
            if response.status_code != 200:
                try:
                    answer = json.loads(response.content)
                except ValueError:
                    answer = None
                if not (isinstance(answer, dict) and answer.get("error_code") == _MISSING):
                    raise self._failure(response, answer, what=f"{where}: download", experiment=experiment,
                                        started=sent)  # fmt: skip
                if running:  # listed a moment ago, gone now: as good as not uploaded
                    skipped(run_id, "not found")
                    return None
                text = self.redact(str(answer.get("message") or f"HTTP {response.status_code}"))
                raise MlflowSourceRefused(self.tracking_uri, f"{where}: not found: {text}", experiment=experiment)
            sizes.append(len(response.content))
            try:
                return run, pq.read_table(pa.BufferReader(response.content))
            except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
                raise MlflowSourceRefused(
                    self.tracking_uri, f"{where}: not a readable Parquet file: {exc}", experiment=experiment
                ) from None

        if workers <= 1 or len(runs) <= 1:
            results = [one(run) for run in runs]
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mlflow-artifacts") as pool:
                results = list(pool.map(one, runs))
        tables = [r for r in results if r is not None]
        self.log.info(
            "MLflow artifacts %r of %d run(s) (experiment %s): %d read, %d skipped, %.1f MiB, %.3f s",
            path, len(runs), experiment, len(tables), len(runs) - len(tables), sum(sizes) / 2**20,
            time.monotonic() - started,
        )  # fmt: skip
        return tables
