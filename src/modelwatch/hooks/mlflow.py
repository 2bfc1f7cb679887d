"""MLflow tracking server hook: experiments, paged run search, metric history, Parquet artifacts.

``mlflow`` is imported only when the hook connects: it takes seconds to import and DAG parsing must not.

Two request paths, one connection: :class:`mlflow.tracking.MlflowClient` for most calls, and for the bulk
read of one-run-per-prediction experiments (:meth:`MlflowHook.search_runs_json`) the REST API through
:class:`~modelwatch.hooks.base.ApiHook`'s one ``_request`` (same retries, backoff and redaction as the
Prometheus and Alertmanager hooks), answering plain JSON with no per-run entity objects.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from airflow.sdk import BaseHook

from modelwatch import connections
from modelwatch.errors import MlflowSourceError, MlflowSourceRefused, UpstreamUnavailable, is_refusal
from modelwatch.hooks.base import ApiHook, basic_auth_token

if TYPE_CHECKING:
    import pyarrow as pa
    from mlflow.entities import Metric, Run
    from mlflow.tracking import MlflowClient

T = TypeVar("T")

#: MlflowClient refuses larger pages (and so does the server's runs/search).
MAX_PAGE_SIZE = 50_000
#: REST endpoint of run search (POST, JSON body).
SEARCH_RUNS_PATH = "/api/2.0/mlflow/runs/search"
#: Order of every run search: run_uuid is the server's own tie-breaker, so offset page tokens stay stable.
SEARCH_ORDER = ("attributes.start_time ASC",)
#: MLflow's own HTTP defaults (``MLFLOW_HTTP_REQUEST_*``), used by the REST path when the connection has
#: no ``max_retries``/``backoff_factor``/``timeout`` extra, so both request paths retry alike.
DEFAULT_MAX_RETRIES = 7
DEFAULT_BACKOFF_FACTOR = 2.0
DEFAULT_TIMEOUT_SECONDS = 120.0
#: Artifact downloads in flight at once (I/O bound: HTTP or object-store requests, file copies).
DOWNLOAD_WORKERS = 8
#: Connection extras -> the MLflow environment variables that carry them (read by MLflow per request).
_EXTRA_ENV = {
    "max_retries": "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "backoff_factor": "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "timeout": "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "insecure_tls": "MLFLOW_TRACKING_INSECURE_TLS",
}
#: MLflow error codes that say the request itself is wrong: retrying the task cannot help.
REFUSAL_CODES = frozenset({
    "INVALID_PARAMETER_VALUE", "BAD_REQUEST", "RESOURCE_DOES_NOT_EXIST", "PERMISSION_DENIED", "UNAUTHENTICATED",
})
_AUTH_ENV = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
_USERINFO = re.compile(r"//[^/@\s]*@")
# MLflow reads credentials from the process environment: serialise our temporary changes to it.
_ENV_LOCK = threading.RLock()


def _started_in(start_ms: int, end_ms: int) -> str:
    """Search filter: runs that started in ``[start_ms, end_ms)``."""
    return f"attributes.start_time >= {int(start_ms)} AND attributes.start_time < {int(end_ms)}"


class _RestConnection:
    """The MLflow connection restated in :class:`~modelwatch.hooks.base.ApiHook`'s terms (what its
    ``get_conn`` reads of an Airflow connection)."""

    def __init__(self, uri: str, login: str | None, password: str | None, extra: Mapping[str, Any]) -> None:
        self.host, self.port, self.schema = uri, None, None
        self.login, self.password = login, password
        auth = ("basic" if login else "bearer") if password else "none"
        timeout = extra.get("timeout")
        self.extra_dejson: dict[str, Any] = {
            "auth": auth,
            "timeout": float(math.ceil(float(timeout))) if timeout is not None else DEFAULT_TIMEOUT_SECONDS,
        }
        if str(extra.get("insecure_tls")).lower() in ("true", "1", "yes"):
            self.extra_dejson["verify"] = False


class MlflowRestHook(ApiHook):
    """The MLflow REST API through :meth:`ApiHook._request`, on the connection of an :class:`MlflowHook`
    (built by it: not resolved from Airflow again).

    :param connection: the MLflow connection in ApiHook's terms.
    :param conn_id: the MLflow connection id, for messages.
    :param kwargs: retry settings, see :class:`~modelwatch.hooks.base.ApiHook`.
    """

    default_conn_name: ClassVar[str] = "mlflow_default"
    conn_type: ClassVar[str] = connections.MLFLOW
    hook_name: ClassVar[str] = "MLflow REST"
    service_name: ClassVar[str] = "MLflow"
    # The cheapest authenticated call of the tracking API.
    test_request: ClassVar[tuple[str, str, dict[str, Any]]] = (
        "GET", "/api/2.0/mlflow/experiments/search", {"params": {"max_results": 1}}
    )

    def __init__(self, connection: _RestConnection, conn_id: str, **kwargs: Any) -> None:
        super().__init__(conn_id, **kwargs)
        self._connection = connection

    def get_connection(self, conn_id: str) -> Any:  # type: ignore[override]
        """The MLflow connection given at construction (already resolved by :class:`MlflowHook`)."""
        return self._connection


class MlflowHook(BaseHook):
    """Read runs and metrics from an MLflow tracking server.

    Connection: ``host`` (a full tracking URI when it contains ``://``), ``port``, ``schema`` (URL
    scheme, default ``http``); ``password`` with ``login`` is HTTP basic auth, ``password`` alone a bearer
    token. Extras ``max_retries``, ``backoff_factor``, ``timeout`` set MLflow's own HTTP retry policy
    (``MLFLOW_HTTP_REQUEST_*``; MLflow's default retries for about 4 minutes), ``insecure_tls``. The REST
    path (:meth:`search_runs_json`) follows the same extras: ``max_retries + 1`` attempts, backoff
    ``backoff_factor`` doubled per attempt (at most 30 s), ``timeout`` per request; MLflow's defaults
    (7, 2 s, 120 s) when absent.

    :param mlflow_conn_id: Airflow connection id.
    :param logger_name: see :class:`airflow.sdk.BaseHook`.
    """

    conn_name_attr: ClassVar[str] = "mlflow_conn_id"
    default_conn_name: ClassVar[str] = "mlflow_default"
    conn_type: ClassVar[str] = connections.MLFLOW
    hook_name: ClassVar[str] = "MLflow"

    def __init__(self, mlflow_conn_id: str = default_conn_name, *, logger_name: str | None = None) -> None:
        super().__init__(logger_name=logger_name)
        self.mlflow_conn_id = mlflow_conn_id
        self._client: MlflowClient | None = None
        self._rest: MlflowRestHook | None = None
        #: Runs per page of every run search of this hook, in order (either request path).
        self.pages_read: list[int] = []
        self._tracking_uri = ""
        self._env: dict[str, str] = {}
        self._secrets: list[str] = []

    # -- connection -------------------------------------------------------------------------------

    @property
    def tracking_uri(self) -> str:
        """The tracking server URI, credentials removed (resolves the connection)."""
        self.get_conn()
        return _USERINFO.sub("//", self._tracking_uri)

    def get_conn(self) -> MlflowClient:
        """Resolve the connection (once) and return an :class:`mlflow.tracking.MlflowClient`."""
        if self._client is not None:
            return self._client
        conn = self.get_connection(self.mlflow_conn_id)
        extra: Mapping[str, Any] = conn.extra_dejson or {}
        host = (conn.host or "").strip()
        if not host:
            raise MlflowSourceError(f"connection {self.mlflow_conn_id!r}", "the connection has no host")
        if "://" in host:
            uri = host.rstrip("/")
        else:
            scheme = (conn.schema or "http").strip() or "http"
            uri = f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "")
        env: dict[str, str] = {}
        if conn.password:
            if conn.login:
                env["MLFLOW_TRACKING_USERNAME"] = conn.login
                env["MLFLOW_TRACKING_PASSWORD"] = conn.password
                # sent as base64(login:password) in the Authorization header, which an error may echo
                self._secrets.append(basic_auth_token(conn.login, conn.password) or "")
            else:
                env["MLFLOW_TRACKING_TOKEN"] = conn.password
            self._secrets.append(conn.password)
        for key, var in _EXTRA_ENV.items():
            value = extra.get(key)
            if value is None:
                continue
            if key == "insecure_tls":
                env[var] = "true" if str(value).lower() in ("true", "1", "yes") else "false"
            else:
                # MLflow parses these variables as integers.
                env[var] = str(math.ceil(float(value)))
        from mlflow.tracking import MlflowClient

        self._tracking_uri = uri
        self._env = env
        self._rest = self._rest_hook(uri, conn.login, conn.password, extra)
        self._client = MlflowClient(tracking_uri=uri)
        return self._client

    def _rest_hook(
        self, uri: str, login: str | None, password: str | None, extra: Mapping[str, Any]
    ) -> MlflowRestHook:
        retries = extra.get("max_retries")
        backoff = extra.get("backoff_factor")
        retries = DEFAULT_MAX_RETRIES if retries is None else max(0, math.ceil(float(retries)))
        return MlflowRestHook(
            _RestConnection(uri, login, password, extra),
            self.mlflow_conn_id,
            max_attempts=1 + retries,
            backoff_base_seconds=DEFAULT_BACKOFF_FACTOR if backoff is None else float(backoff),
        )

    def test_connection(self) -> tuple[bool, str]:
        """Airflow's connection Test: one search of at most one experiment through the REST path."""
        try:
            rest = self.rest
        except Exception as exc:  # a bad connection is the answer the form shows
            return False, f"MLflow connection {self.mlflow_conn_id!r}: {exc}"
        return rest.test_connection()

    @property
    def rest(self) -> MlflowRestHook:
        """The REST request path of this hook's connection (resolves the connection)."""
        self.get_conn()
        assert self._rest is not None
        return self._rest

    @contextmanager
    def _credentials_env(self) -> Generator[None]:
        # MLflow reads credentials from os.environ at each request; set ours only for the call and put
        # back what was there, so they never leak to other code (or to a task's environment dump).
        with _ENV_LOCK:
            names = set(self._env) | (set(_AUTH_ENV) if self._env.keys() & set(_AUTH_ENV) else set())
            saved = {name: os.environ.get(name) for name in names}
            try:
                for name in names:
                    os.environ.pop(name, None)
                os.environ.update(self._env)
                yield
            finally:
                for name, value in saved.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return _USERINFO.sub("//***@", text)

    def _call(self, what: str, fn: Callable[..., T], *args: Any, experiment: str | None = None, **kwargs: Any) -> T:
        from mlflow.exceptions import MlflowException
        from requests import RequestException

        self.get_conn()
        started = time.monotonic()
        try:
            with self._credentials_env():
                return fn(*args, **kwargs)
        except (MlflowException, RequestException, OSError) as exc:
            message = getattr(exc, "message", None) or str(exc)
            code = getattr(exc, "error_code", None)
            reason = f"{what} failed after {time.monotonic() - started:.1f} s" + (f" ({code})" if code else "")
            # a refusal fails the task without Airflow's retries; anything else (unreachable, 5xx) is retried
            kind = MlflowSourceRefused if code in REFUSAL_CODES else MlflowSourceError
            raise kind(self.tracking_uri, f"{reason}: {self._redact(str(message))}", experiment=experiment) from None

    # -- API --------------------------------------------------------------------------------------

    def experiment_ids(self, names: Sequence[str]) -> dict[str, str]:
        """Experiment ids by name.

        :param names: experiment names (case-sensitive).
        :raises MlflowSourceError: naming an experiment that does not exist (or is deleted) and the server.
        """
        client = self.get_conn()
        ids: dict[str, str] = {}
        for name in names:
            experiment = self._call("get_experiment_by_name", client.get_experiment_by_name, name, experiment=name)
            if experiment is None:
                raise MlflowSourceRefused(self.tracking_uri, "no such experiment", experiment=name)
            if experiment.lifecycle_stage != "active":
                raise MlflowSourceRefused(
                    self.tracking_uri, f"experiment is {experiment.lifecycle_stage}", experiment=name
                )
            ids[name] = str(experiment.experiment_id)
        return ids

    def _paged_runs(self, experiment_ids: Sequence[str], filter_string: str, page_size: int) -> Iterator[Run]:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {page_size}")
        client = self.get_conn()
        ids = [str(i) for i in experiment_ids]
        token: str | None = None
        pages = runs = 0
        started = time.monotonic()
        while True:
            page = self._call(
                "search_runs",
                client.search_runs,
                experiment_ids=ids,
                filter_string=filter_string,
                max_results=page_size,
                # run_uuid is the server's own tie-breaker, so offset-based page tokens stay stable.
                order_by=list(SEARCH_ORDER),
                page_token=token,
                experiment=",".join(ids),
            )
            pages += 1
            runs += len(page)
            self.pages_read.append(len(page))
            yield from page
            token = page.token
            if not token:
                break
        self.log.info(
            "MLflow search_runs experiments=%s filter=%r: %d run(s) in %d page(s), %.3f s",
            ids, filter_string, runs, pages, time.monotonic() - started,
        )

    def search_runs(
        self, experiment_ids: Sequence[str], start_ms: int, end_ms: int, *, page_size: int = 1000
    ) -> Iterator[Run]:
        """Active runs that started in ``[start_ms, end_ms)``, oldest first, every page followed.

        :param experiment_ids: experiment ids (see :meth:`experiment_ids`).
        :param start_ms: window start, epoch milliseconds (inclusive).
        :param end_ms: window end, epoch milliseconds (exclusive).
        :param page_size: runs per request (1..50,000).
        :raises MlflowSourceError: on a server error or an unreachable server.
        """
        return self._paged_runs(experiment_ids, _started_in(start_ms, end_ms), page_size)

    def search_runs_json(
        self,
        experiment_ids: Sequence[str],
        start_ms: int,
        end_ms: int,
        *,
        page_size: int = 1000,
        experiment: str | None = None,
    ) -> list[dict[str, Any]]:
        """The runs of :meth:`search_runs` (same filter, order and pages) as MLflow's REST JSON objects.

        ``POST /api/2.0/mlflow/runs/search`` through :meth:`ApiHook._request` (retries, backoff,
        redaction), every ``next_page_token`` followed. Each run is the server's JSON: ``{"info": {"run_id",
        "start_time", ...}, "data": {"metrics": [{"key", "value", ...}], "tags": [{"key", "value"}]}}``
        (an empty list may be absent; a NaN metric value is the string ``"NaN"``).

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
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {page_size}")
        rest = self.rest
        ids = [str(i) for i in experiment_ids]
        name = experiment or ",".join(ids)
        body: dict[str, Any] = {
            "experiment_ids": ids,
            "filter": _started_in(start_ms, end_ms),
            "max_results": page_size,
            "order_by": list(SEARCH_ORDER),
            "run_view_type": "ACTIVE_ONLY",
        }
        runs: list[dict[str, Any]] = []
        pages = 0
        started = time.monotonic()
        while True:
            answer = self._rest_post(rest, SEARCH_RUNS_PATH, body, what="runs/search", experiment=name)
            page = answer.get("runs") or []
            if not isinstance(page, list):
                raise MlflowSourceError(
                    self.tracking_uri, f"runs/search answered 'runs' of type {type(page).__name__}", experiment=name
                )
            runs.extend(page)
            pages += 1
            self.pages_read.append(len(page))
            token = answer.get("next_page_token")
            if not token:
                break
            body["page_token"] = token
        self.log.info(
            "MLflow runs/search (REST) experiment %s filter=%r: %d run(s) in %d page(s), %.3f s",
            name, body["filter"], len(runs), pages, time.monotonic() - started,
        )  # fmt: skip
        return runs

    def _rest_post(
        self, rest: MlflowRestHook, path: str, body: Mapping[str, Any], *, what: str, experiment: str
    ) -> dict[str, Any]:
        """POST ``body`` to ``path``; the decoded JSON object, or an :class:`MlflowSourceError`."""
        started = time.monotonic()
        try:
            response = rest._request("POST", path, json=body)
        except UpstreamUnavailable as exc:
            raise MlflowSourceError(
                self.tracking_uri,
                f"{what} failed after {exc.attempts} attempt(s), {time.monotonic() - started:.1f} s: {exc.last_error}",
                experiment=experiment,
            ) from None
        try:
            answer = json.loads(response.content)
        except ValueError:
            answer = None
        if response.status_code != 200 or not isinstance(answer, dict):
            code = answer.get("error_code") if isinstance(answer, dict) else None
            message = answer.get("message") if isinstance(answer, dict) else None
            text = rest.redact(str(message)) if message else rest.body_excerpt(response) or "(empty body)"
            status = f"HTTP {response.status_code}" + (f" {code}" if code else "")
            if response.status_code == 200:
                status += ", not an MLflow JSON object"
            refused = code in REFUSAL_CODES or is_refusal(response.status_code)
            kind = MlflowSourceRefused if refused else MlflowSourceError
            reason = f"{what} failed after {time.monotonic() - started:.1f} s ({status}): {text}"
            raise kind(self.tracking_uri, reason, experiment=experiment)
        return answer

    def search_runs_overlapping(
        self, experiment_ids: Sequence[str], start_ms: int, end_ms: int, page_size: int = 1000
    ) -> list[Run]:
        """Active runs that overlap ``[start_ms, end_ms)``: started before ``end_ms`` and not finished
        before ``start_ms`` (``end_time`` unset, or at/after ``start_ms``). Sorted by start time, run id.

        MLflow's filter has no OR and no ``IS NULL`` on attributes, so this is two searches: finished
        runs with ``end_time >= start_ms``, and runs still ``RUNNING`` (no end time yet); the exact
        condition is re-checked here. A run marked finished without an end time is not found.

        :raises MlflowSourceError: on a server error or an unreachable server.
        """
        before_end = f"attributes.start_time < {int(end_ms)}"
        found: dict[str, Run] = {}
        for flt in (
            f"{before_end} AND attributes.end_time >= {int(start_ms)}",
            f"{before_end} AND attributes.status = 'RUNNING'",
        ):
            for run in self._paged_runs(experiment_ids, flt, page_size):
                info = run.info
                if info.start_time is None or info.start_time >= end_ms:
                    continue
                if info.end_time is not None and info.end_time < start_ms:
                    continue
                found[info.run_id] = run
        return sorted(found.values(), key=lambda r: (r.info.start_time, r.info.run_id))

    def metric_history(self, run_id: str, key: str) -> list[Metric]:
        """Every logged value of metric ``key`` in run ``run_id`` (MLflow pages internally).

        :raises MlflowSourceError: on a server error or an unreachable server.
        """
        client = self.get_conn()
        started = time.monotonic()
        history = self._call(f"get_metric_history({key!r})", client.get_metric_history, run_id, key)
        self.log.debug(
            "MLflow metric history run=%s key=%s: %d point(s), %.3f s",
            run_id, key, len(history), time.monotonic() - started,
        )
        return list(history)

    def read_parquet_artifacts(
        self, runs: Sequence[Run], path: str, *, experiment: str | None = None, workers: int = DOWNLOAD_WORKERS
    ) -> list[tuple[Run, pa.Table]]:
        """The Parquet artifact ``path`` of every run, read with pyarrow, in the order of ``runs``.

        Only that one file of each run is downloaded (from the run's ``artifact_uri``: the server's artifact
        proxy, S3, a local folder...), ``workers`` at a time, into a temporary folder removed afterwards.
        A run still ``RUNNING`` without the artifact (a batch being written, or a writer that died before
        uploading) is skipped with a warning; a finished run without it is an error.

        :param runs: runs from :meth:`search_runs_overlapping` (their ``info.artifact_uri`` is used).
        :param path: artifact path inside each run (e.g. ``predictions.parquet``).
        :param experiment: experiment name, for messages.
        :param workers: downloads in flight at once.
        :raises MlflowSourceRefused: a finished run without the artifact, or a file that is not Parquet
            (message: experiment, run, artifact path, server).
        :raises MlflowSourceError: a server or storage failure (retryable).
        """
        import pyarrow.parquet as pq
        from mlflow.exceptions import MlflowException
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
        from requests import RequestException

        self.get_conn()
        started = time.monotonic()
        sizes: list[int] = []

        def one(index: int, run: Run, tmp: Path) -> tuple[Run, pa.Table] | None:
            where = f"run {run.info.run_id} artifact {path!r}"
            try:
                repo = get_artifact_repository(run.info.artifact_uri, tracking_uri=self._tracking_uri)
                dst = tmp / str(index)
                dst.mkdir()
                local = Path(repo.download_artifacts(path, dst_path=str(dst)))
                sizes.append(local.stat().st_size)
            except (MlflowException, RequestException, OSError) as exc:
                code = getattr(exc, "error_code", None)
                text = self._redact(str(getattr(exc, "message", None) or exc))
                missing = code == "RESOURCE_DOES_NOT_EXIST" or "404" in text or "No such" in text
                if missing and run.info.status == "RUNNING":
                    self.log.warning(
                        "MLflow experiment %s: %s is missing and the run is still RUNNING: skipped (%s)",
                        experiment, where, text.splitlines()[-1][:200],
                    )  # fmt: skip
                    return None
                kind = MlflowSourceRefused if missing or code in REFUSAL_CODES else MlflowSourceError
                reason = "not found" if missing else f"download failed ({code or type(exc).__name__})"
                raise kind(self.tracking_uri, f"{where}: {reason}: {text}", experiment=experiment) from None
            try:
                return run, pq.read_table(local)
            except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
                raise MlflowSourceRefused(
                    self.tracking_uri, f"{where}: not a readable Parquet file: {exc}", experiment=experiment
                ) from None

        with tempfile.TemporaryDirectory(prefix="modelwatch-batches-") as tmp, self._credentials_env():
            if workers <= 1 or len(runs) <= 1:
                results = [one(i, run, Path(tmp)) for i, run in enumerate(runs)]
            else:
                with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mlflow-artifacts") as pool:
                    results = list(pool.map(one, range(len(runs)), runs, [Path(tmp)] * len(runs)))
        tables = [r for r in results if r is not None]
        self.log.info(
            "MLflow artifacts %r of %d run(s) (experiment %s): %d read, %d skipped, %.1f MiB, %.3f s",
            path, len(runs), experiment, len(tables), len(runs) - len(tables), sum(sizes) / 2**20,
            time.monotonic() - started,
        )  # fmt: skip
        return tables
