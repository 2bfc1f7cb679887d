"""The Parquet lake: one base URL, Hive-style partitions, a manifest written last.

Layout, readable by Athena, DuckDB and Spark::

    <base>/<dataset>/dt=YYYY-MM-DD/part-00000.parquet
    <base>/<dataset>/dt=YYYY-MM-DD/_manifest.json     <- written last: the partition is complete
    <base>/<dataset>/dt=YYYY-MM-DD/_<name>.json       <- documents (verdict, alert payload)
    <base>/intraday/<dataset>/dt=YYYY-MM-DD/hour=HH/...   <- windows shorter than a day (hourly runs)
    <base>/adhoc/<dataset>/dt=YYYY-MM-DD/run=<run id>/... <- ad-hoc runs (a trigger-form window, a model subset)
    <base>/_staging/dt=YYYY-MM-DD/run=<hash>/...       <- parts of mapped tasks until the run commits them

Files whose names start with ``_`` or ``.`` are skipped by those engines, so the manifest and documents
can sit beside the data. A re-run of a day replaces its partition: the manifest goes first (the partition
is visibly incomplete), the data file is replaced by one atomic object write (``rename`` on a local disk, a
single PUT on S3), stray files are removed and the new manifest is written. Readers that glob
``*.parquet`` see the old file or the new one, never a mix and never a duplicate.

Two runs writing the same partition at once (a retry racing a re-run): each writer reads the data file
back after writing its manifest and writes again if it is no longer its own, so the partition ends as one
run's data under that run's manifest. Readers check the data against the manifest's sha256 and get
:class:`IncompletePartition` while a rewrite is under way. On S3 nothing creates a bucket: a missing
bucket is an error, not a new bucket.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import random
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from modelwatch.errors import ModelwatchError
from modelwatch.schema import ADDED_LATER, FLOAT, FRAME_DATASETS, check, conform, logged_types

if TYPE_CHECKING:
    import pandas as pd
    from airflow.sdk import ObjectStoragePath

    from modelwatch.window import Window

log = logging.getLogger(__name__)

DATA_FILE = "part-00000.parquet"
#: Attempts of one partition write when concurrent runs of the same window keep replacing the data.
MAX_WRITE_ATTEMPTS = 8
#: A local temporary file younger than this belongs to a write in progress and is not a leftover.
STALE_TMP_SECONDS = 3600.0
_TMP_PREFIX, _TMP_SUFFIX = "_tmp-", ".partial"
MANIFEST = "_manifest.json"
#: Folder under the base URL where mapped tasks leave their parts until the run commits them.
STAGING = "_staging"
#: The key of the verdict document (``verdicts/<partition>/_verdict.json``, written last by ``evaluate``) that
#: names the version of each partition of the window's run: the window's commit (:meth:`Lake.read_committed`).
COMMITTED = "partitions"
#: The datasets modelwatch writes; each is also an Airflow Asset.
DATASETS = ("resources", "predictions", "joined", "correlation", "verdicts", "drift", "alerts", "reports")


class StorageError(ModelwatchError):
    """A partition could not be written or read; the message names the URL and the reason."""


class IncompletePartition(StorageError):
    """The partition has no manifest (never written, being rewritten, or a write failed half-way)."""


class PartitionReplaced(StorageError, AirflowFailException):
    """The partition a task was given now holds another version (another run of the same window rewrote
    it): the task's input is gone, and retrying the task cannot bring it back."""


@dataclass(frozen=True)
class PartitionRef:
    """What a task puts in XCom: where a partition is, which version of it (the data file's sha256 and
    the run that wrote it), and what it holds."""

    dataset: str
    url: str
    rows: int
    sha256: str
    run_id: str

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "url": self.url, "rows": self.rows, "sha256": self.sha256,
                "run_id": self.run_id}  # fmt: skip


def dataset_url(base_url: str, dataset: str, table: str = "") -> str:
    """The URL of a dataset's table location (what an Asset and an Athena table point at).

    ``table`` is :attr:`Window.table <modelwatch.window.Window.table>`: daily partitions at the top,
    hourly ones under ``intraday/``, ad-hoc runs' under ``adhoc/``, so each table has one partitioning scheme.
    """
    return f"{base_url.rstrip('/')}/{table + '/' if table else ''}{dataset}"


class Lake:
    """Reads and writes partitions under one base URL.

    :param base_url: ``file:///abs/path`` or ``s3://bucket/prefix``.
    :param aws_conn_id: the Airflow connection S3 is reached through (its ``endpoint_url`` extra makes any
        S3-compatible store work).
    """

    def __init__(self, base_url: str, aws_conn_id: str = "aws_default") -> None:
        self.base_url = base_url.rstrip("/")
        self.aws_conn_id = aws_conn_id

    # -- paths -----------------------------------------------------------------------------------------
    def _path(self, url: str) -> ObjectStoragePath:
        from airflow.sdk import ObjectStoragePath

        if url.startswith("s3://"):
            return ObjectStoragePath(url, conn_id=self.aws_conn_id)
        return ObjectStoragePath(url)

    def partition_url(self, dataset: str, window: Window) -> str:
        """URL of ``dataset``'s partition for ``window``."""
        if dataset not in DATASETS:
            raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
        return f"{dataset_url(self.base_url, dataset, window.table)}/{window.partition_path}"

    # -- writing -----------------------------------------------------------------------------------------
    def write_frame(
        self, dataset: str, window: Window, frame: pd.DataFrame, *, run_id: str, extra: dict[str, Any] | None = None
    ) -> PartitionRef:
        """Replace ``dataset``'s partition for ``window`` with ``frame``.

        :raises StorageError: naming the URL and the reason; the partition is then left without a
            manifest (incomplete), never looking complete with partial data.
        """
        import pyarrow as pa

        return self._write_table(dataset, window, pa.Table.from_pandas(frame, preserve_index=False), run_id, extra)

    def _write_table(
        self, dataset: str, window: Window, table: Any, run_id: str, extra: dict[str, Any] | None = None
    ) -> PartitionRef:
        url = self.partition_url(dataset, window)
        if dataset in FRAME_DATASETS:
            # every partition of a dataset stores the same columns as the same types, whatever the window held
            table = conform(table, dataset, where=url)
        payload = table_to_parquet(table)
        manifest = {
            "dataset": dataset,
            "partition": dict(window.partition),
            "window": window.to_dict(),
            "run_id": run_id,
            "files": [{"name": DATA_FILE, "rows": table.num_rows, "bytes": len(payload), "sha256": _sha256(payload)}],
            "columns": [str(c) for c in table.column_names],
            **(extra or {}),
        }
        sha = manifest["files"][0]["sha256"]
        try:
            part = self._path(url)
            _mkdir(part)
            for attempt in range(1, MAX_WRITE_ATTEMPTS + 1):
                _unlink(part / MANIFEST)
                self._atomic_write(part, DATA_FILE, payload)
                self._remove_strays(part)
                self._atomic_write(part, MANIFEST, _json_bytes(manifest))
                # Another run writing the same partition at the same moment may have replaced the data
                # between our data write and our manifest write. Whoever writes the last manifest checks
                # the data after it, so the partition ends up as one run's data with that run's manifest.
                if _still_ours(part, sha):
                    break
                log.warning(
                    "%s/%s was replaced by a concurrent write after ours (attempt %d/%d); writing again",
                    url, DATA_FILE, attempt, MAX_WRITE_ATTEMPTS,
                )
                # jitter breaks the lockstep of writers that started together
                time.sleep(random.uniform(0.05, 0.25) * attempt)
            else:
                self._drop_mismatched_manifest(part)
                raise StorageError(
                    f"writing {dataset} partition {url} failed: other runs kept rewriting it at the same time "
                    f"({MAX_WRITE_ATTEMPTS} attempts)"
                )
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(f"writing {dataset} partition {url} failed: {type(exc).__name__}: {exc}") from exc
        log.info("wrote %s rows to %s/%s (%s bytes)", table.num_rows, url, DATA_FILE, len(payload))
        return PartitionRef(dataset, url, table.num_rows, sha, run_id)

    # -- staging: the parts of a partition that mapped tasks compute side by side -------------------------
    def staging_url(self, window: Window, run_id: str) -> str:
        """Where the mapped tasks of run ``run_id`` leave their parts of ``window``'s partitions.

        Outside every dataset's table location (``_staging`` is skipped by Athena, DuckDB and Spark) and
        keyed by the run, so a run never reads or removes the parts of another run of the same window.
        """
        token = hashlib.sha256(run_id.encode()).hexdigest()[:16]
        return f"{self.base_url}/{STAGING}/{window.partition_path}/run={token}"

    def stage_frame(self, window: Window, run_id: str, name: str, frame: pd.DataFrame) -> str:
        """Write one part (``<name>.parquet``) for :meth:`commit_parts`; returns its URL. A retry replaces it."""
        return self._stage(window, run_id, f"{name}.parquet", frame_to_parquet(frame))

    def stage_document(self, window: Window, run_id: str, name: str, document: Any) -> str:
        """Write one JSON part (``<name>.json``); returns its URL (read it with :meth:`read_document`)."""
        return self._stage(window, run_id, f"{name}.json", _json_bytes(document))

    def _stage(self, window: Window, run_id: str, name: str, payload: bytes) -> str:
        url = self.staging_url(window, run_id)
        try:
            part = self._path(url)
            _mkdir(part)
            self._atomic_write(part, name, payload)
        except Exception as exc:
            raise StorageError(f"writing {url}/{name} failed: {type(exc).__name__}: {exc}") from exc
        return f"{url}/{name}"

    def commit_parts(
        self,
        dataset: str,
        window: Window,
        part_urls: list[str],
        *,
        run_id: str,
        sort_by: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> PartitionRef:
        """Replace ``dataset``'s partition for ``window`` with the staged parts, in the order given, as one
        data file (so readers keep seeing one run's data whole, as with :meth:`write_frame`).

        Parts are concatenated as Arrow tables, without a round trip through pandas; a column that is
        all-null in one part takes the type it has in the others.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not part_urls:
            raise ValueError(f"no staged parts to commit to the {dataset} partition of {window}")
        tables = []
        for url in part_urls:
            try:
                tables.append(pq.read_table(io.BytesIO(self._path(url).read_bytes())))
            except FileNotFoundError:
                raise StorageError(f"staged part {url} is missing: the task that wrote it must run again") from None
            except Exception as exc:
                raise StorageError(f"reading staged part {url} failed: {type(exc).__name__}: {exc}") from exc
        table = tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")
        if sort_by is not None and table.num_rows:
            table = table.sort_by(sort_by)  # stable: rows of equal keys keep their part's order
        return self._write_table(dataset, window, table, run_id, extra)

    def drop_staging(self, window: Window, run_id: str) -> None:
        """Remove run ``run_id``'s staged parts of ``window`` (after they are committed)."""
        url = self.staging_url(window, run_id)
        try:
            path = self._path(url)
            if path.exists():
                path.fs.rm(path.path, recursive=True)
        except Exception as exc:  # a leftover costs space, not correctness: say where it is
            log.warning("could not remove the staged parts at %s: %s: %s", url, type(exc).__name__, exc)

    def drop_stale_staging(self, window: Window, run_id: str, older_than: float) -> list[str]:
        """Remove the staged parts other runs of ``window``'s day left more than ``older_than`` seconds ago
        (a run that failed for good never drops its own); a younger folder may belong to a run still under
        way, and this run's own is for :meth:`drop_staging`. :returns: the URLs removed."""
        own = self.staging_url(window, run_id)
        day = f"{self.base_url}/{STAGING}/{window.partition_path.split('/')[0]}"
        removed: list[str] = []
        try:
            root = self._path(day)
            if not root.exists():
                return removed
            now = time.time()
            for folder in root.fs.find(root.path, withdirs=True, maxdepth=3):
                name = folder.rstrip("/").rsplit("/", 1)[-1]
                url = f"{day}/{folder.rstrip('/')[len(root.path.rstrip('/')) + 1:]}"
                if not name.startswith("run=") or url == own or own.startswith(f"{url}/"):
                    continue
                files = root.fs.find(folder, detail=True)
                if not files:
                    continue
                newest = max(_modified(info) for info in files.values())
                if now - newest > older_than and not any(k.startswith("run=") for k in _below(files, folder)):
                    root.fs.rm(folder, recursive=True)
                    removed.append(url)
        except Exception as exc:  # a leftover costs space, not correctness: say where it is
            log.warning("could not clean stale staged parts under %s: %s: %s", day, type(exc).__name__, exc)
        for url in removed:
            log.info("removed %s: staged parts of a run of this window that never committed them", url)
        return removed

    def read_committed(self, dataset: str, window: Window, **kwargs: Any) -> pd.DataFrame:
        """Read ``dataset``'s partition of ``window`` in the version the window's commit names (the verdict
        document's :data:`COMMITTED`), so a reader never pairs one run's ``joined`` with another's
        ``verdicts``. A window committed before commits named their partitions is read as stored.

        :raises IncompletePartition: no commit and no complete partition, or another run of the window is
            rewriting it (the commit and the partition disagree).
        """
        document = self.read_document(self.document_url("verdicts", window, "verdict")) or {}
        ref = (document.get(COMMITTED) or {}).get(dataset)
        if ref is None:
            return self.read_partition(self.partition_url(dataset, window), **kwargs)
        try:
            return self.read_ref(ref, **kwargs)
        except PartitionReplaced as exc:
            raise IncompletePartition(f"window {window} is being judged again by another run: {exc}") from None

    def stored_ref(self, dataset: str, window: Window) -> PartitionRef | None:
        """The reference of ``dataset``'s complete partition for ``window`` as stored now, or ``None`` when
        there is none (never written, or being rewritten)."""
        url = self.partition_url(dataset, window)
        try:
            manifest = self.read_manifest(url)
        except IncompletePartition:
            return None
        files = manifest.get("files") or [{}]
        return PartitionRef(dataset, url, int(files[0].get("rows", 0)), str(files[0].get("sha256", "")),
                            str(manifest.get("run_id", "")))  # fmt: skip

    def document_url(self, dataset: str, window: Window, name: str) -> str:
        """URL of the JSON document ``_<name>.json`` beside ``dataset``'s partition for ``window``."""
        return f"{self.partition_url(dataset, window)}/_{name}.json"

    def write_document(self, dataset: str, window: Window, name: str, document: Any) -> str:
        """Write a JSON document (``_<name>.json``) beside a partition's data; returns its URL."""
        url = self.partition_url(dataset, window)
        try:
            part = self._path(url)
            _mkdir(part)
            self._atomic_write(part, f"_{name}.json", _json_bytes(document))
        except Exception as exc:
            raise StorageError(f"writing {url}/_{name}.json failed: {type(exc).__name__}: {exc}") from exc
        return self.document_url(dataset, window, name)

    def replace_files(self, dataset: str, window: Window, files: dict[str, bytes]) -> dict[str, str]:
        """Make ``files`` (name -> content) the whole content of ``window``'s folder of a document-only
        dataset (``reports``): each written atomically, then the files an earlier run of the window left and
        this run does not write removed. :returns: name -> URL."""
        url = self.partition_url(dataset, window)
        try:
            part = self._path(url)
            if files:
                _mkdir(part)
            for name, payload in files.items():
                self._atomic_write(part, name, payload)
            if part.exists():
                for child in part.iterdir():
                    if child.name not in files and not child.is_dir() and not child.name.startswith(_TMP_PREFIX):
                        _unlink(child)
        except Exception as exc:
            raise StorageError(f"writing {url} failed: {type(exc).__name__}: {exc}") from exc
        return {name: f"{url}/{name}" for name in files}

    def list_days(self, dataset: str) -> list[str]:
        """The days (``YYYY-MM-DD``) of ``dataset``'s canonical daily partitions (``dt=`` folders), oldest first;
        whether each is complete is for the reader to check."""
        try:
            root = self._path(dataset_url(self.base_url, dataset))
            names = [child.name for child in root.iterdir()] if root.exists() else []
        except Exception as exc:
            raise StorageError(f"listing {dataset_url(self.base_url, dataset)} failed: {type(exc).__name__}: {exc}") from exc
        return sorted(n.removeprefix("dt=") for n in names if n.startswith("dt=") and len(n) == 13)

    def read_bytes(self, url: str) -> bytes | None:
        """The content of the file at ``url``, or ``None`` if there is none."""
        try:
            return self._path(url).read_bytes()
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise StorageError(f"reading {url} failed: {type(exc).__name__}: {exc}") from exc

    def remove_document(self, dataset: str, window: Window, name: str) -> bool:
        """Remove the document ``_<name>.json`` beside ``window``'s partition, if there is one (a document of
        an earlier run of the window that this run does not write again). :returns: whether it existed."""
        url = self.document_url(dataset, window, name)
        try:
            path = self._path(url)
            if not path.exists():
                return False
            _unlink(path)
        except Exception as exc:
            raise StorageError(f"removing {url} failed: {type(exc).__name__}: {exc}") from exc
        log.info("removed %s (written by an earlier run of this window)", url)
        return True

    @staticmethod
    def _remove_strays(part: ObjectStoragePath) -> None:
        # Leftovers of an older layout, or of a local write that died before its rename. Another run's
        # temporary file is young and about to be renamed: leave it alone.
        for child in part.iterdir():
            name = child.name
            if name == DATA_FILE or (name.startswith("_") and name.endswith(".json")):
                continue
            try:
                if child.is_dir():
                    continue
                if (
                    name.startswith(_TMP_PREFIX)
                    and name.endswith(_TMP_SUFFIX)
                    and time.time() - os.path.getmtime(child.path) < STALE_TMP_SECONDS
                ):
                    continue
                _unlink(child)
            except FileNotFoundError:
                continue  # removed meanwhile by a concurrent write of the same partition

    @staticmethod
    def _drop_mismatched_manifest(part: ObjectStoragePath) -> None:
        # Giving up must not leave a manifest that describes other data: make the partition incomplete.
        try:
            manifest = json.loads((part / MANIFEST).read_bytes())
            data = (part / DATA_FILE).read_bytes()
        except _replaced_errors():
            _unlink(part / MANIFEST)
            return
        if manifest["files"][0]["sha256"] != _sha256(data):
            _unlink(part / MANIFEST)

    def _atomic_write(self, part: ObjectStoragePath, name: str, payload: bytes) -> None:
        target = part / name
        if part.protocol in ("file", "local"):
            # A local write is visible while it grows: write under a name readers skip, then rename,
            # which is atomic within one filesystem.
            # (".partial", not ".parquet": a "*.parquet" glob must not pick it up)
            tmp = part / f"{_TMP_PREFIX}{uuid.uuid4().hex}{_TMP_SUFFIX}"
            try:
                with tmp.open("wb") as fh:
                    fh.write(payload)
                tmp.rename(target)
            finally:
                _unlink(tmp)
        else:
            # An S3 object appears whole or not at all (single PUT or a completed multipart upload).
            with target.open("wb") as fh:
                fh.write(payload)

    # -- reading -----------------------------------------------------------------------------------------
    def manifest(self, dataset: str, window: Window) -> dict[str, Any]:
        """The manifest of ``dataset``'s partition for ``window`` (see :meth:`read_manifest`)."""
        return self.read_manifest(self.partition_url(dataset, window))

    def read_manifest(self, url: str) -> dict[str, Any]:
        """The manifest of the partition at ``url``.

        :raises IncompletePartition: when there is none.
        """
        try:
            raw = (self._path(url) / MANIFEST).read_bytes()
        except FileNotFoundError:
            raise IncompletePartition(
                f"{url} has no {MANIFEST}: the partition was never completed (or is being rewritten)"
            ) from None
        except Exception as exc:
            raise StorageError(f"reading {url}/{MANIFEST} failed: {type(exc).__name__}: {exc}") from exc
        return json.loads(raw)

    def read_frame(self, dataset: str, window: Window) -> pd.DataFrame:
        """Read ``dataset``'s complete partition for ``window`` (see :meth:`read_partition`)."""
        return self.read_partition(self.partition_url(dataset, window))

    def read_history(
        self, dataset: str, windows: list[Window], columns: list[str], filters: list[tuple[str, str, Any]] | None = None
    ) -> tuple[pd.DataFrame, list[Window]]:
        """Read ``dataset``'s complete partitions of ``windows`` that exist (a window never written, or being
        rewritten, is skipped), as one frame of ``columns``.

        :returns: the frame (empty, with the declared types, when none exists) and the windows found.
        """
        import pandas as pd

        from modelwatch.schema import arrow_schema

        frames, found = [], []
        for window in windows:
            try:
                frames.append(self.read_partition(self.partition_url(dataset, window), columns=columns, filters=filters))
            except IncompletePartition:
                continue
            found.append(window)
        if not frames:
            return arrow_schema(dataset, columns).empty_table().select(columns).to_pandas(), found
        return pd.concat(frames, ignore_index=True), found

    def read_ref(self, ref: dict[str, Any], **kwargs: Any) -> pd.DataFrame:
        """Read the partition a task got in XCom (:meth:`PartitionRef.to_dict`), exactly the version it names.

        :raises PartitionReplaced: when another run has rewritten the partition since.
        """
        return self.read_partition(
            ref["url"], version=ref.get("sha256"), written_by=ref.get("run_id"), **kwargs
        )

    def read_partition(
        self,
        url: str,
        *,
        columns: list[str] | None = None,
        filters: list[tuple[str, str, Any]] | None = None,
        version: str | None = None,
        written_by: str | None = None,
    ) -> pd.DataFrame:
        """Read the complete partition at ``url``, checked against its manifest.

        :param columns: only these columns; :param filters: only the rows that pass these pyarrow filters
            (``[("model", "in", [...])]``): a mapped task reads its share without the rest in memory.
        :param version: the data file's sha256 the reader expects (from its :class:`PartitionRef`);
            :param written_by: the run that wrote that version (for the message).
        :raises IncompletePartition: no manifest, or the data does not match it (a concurrent rewrite).
        :raises PartitionReplaced: the manifest describes another version than ``version``.
        """
        import pandas as pd
        import pyarrow.parquet as pq

        manifest = self.read_manifest(url)
        if version is not None and [f["sha256"] for f in manifest["files"]] != [version]:
            raise PartitionReplaced(
                f"{url} was rewritten by run {manifest.get('run_id')!r} after run {written_by!r} wrote the version "
                f"this task was given (sha256 {version[:12]}, now {manifest['files'][0]['sha256'][:12]}): this run's "
                "input is gone. Two runs of the same window ran at once; clear this whole run to judge it again"
            )
        dataset = manifest.get("dataset")
        frames = []
        for entry in manifest["files"]:
            try:
                payload = (self._path(url) / entry["name"]).read_bytes()
            except _replaced_errors() as exc:
                raise IncompletePartition(
                    f"{url}/{entry['name']} changed while it was read (rewritten by another run?); retry: {exc}"
                ) from None
            except Exception as exc:
                raise StorageError(f"reading {url}/{entry['name']} failed: {type(exc).__name__}: {exc}") from exc
            if _sha256(payload) != entry["sha256"]:
                raise IncompletePartition(
                    f"{url}/{entry['name']} does not match its manifest (rewritten by another run?); retry"
                )
            absent: list[str] = []
            later: list[str] = []
            if dataset in FRAME_DATASETS:
                # the file's own schema, no data read: a partition written before a schema change fails here,
                # naming the column, instead of deep inside a stage
                schema = pq.read_schema(io.BytesIO(payload))
                check(schema, dataset, where=f"{url}/{entry['name']}", stored=True)
                # a logged value added to mlflow.logged after this partition was written: not logged then
                absent = [c for c in logged_types(columns or ()) if c not in schema.names]
                later = [c for c in ADDED_LATER.get(dataset, ()) if c not in schema.names
                         and (columns is None or c in columns)]  # fmt: skip
            read = [c for c in columns if c not in absent and c not in later] if columns is not None else None
            frame = pd.read_parquet(io.BytesIO(payload), columns=read, filters=filters)
            if later:  # a column added after this partition was written: nothing was recorded then
                frame = frame.assign(**dict.fromkeys(later, ""))
            if absent:
                frame = frame.assign(**{c: pd.Series([None] * len(frame), index=frame.index,
                                                     dtype="float64" if t == FLOAT else "object")
                                        for c, t in logged_types(absent).items()})[columns]  # fmt: skip
            frames.append(frame)
        return pd.concat(frames, ignore_index=True) if len(frames) != 1 else frames[0]

    def read_document(self, url: str) -> Any:
        """Read a JSON document written by :meth:`write_document`, or ``None`` if it does not exist."""
        try:
            return json.loads(self._path(url).read_bytes())
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise StorageError(f"reading {url} failed: {type(exc).__name__}: {exc}") from exc


def _replaced_errors() -> tuple[type[Exception], ...]:
    """What reading a file raises when another writer replaces or removes it meanwhile."""
    try:
        from s3fs.utils import FileExpired  # the object's ETag changed between opening and reading it
    except ImportError:  # pragma: no cover - s3fs is installed with the Amazon provider's [s3fs] extra
        return (FileNotFoundError,)
    return (FileNotFoundError, FileExpired)


def _still_ours(part: ObjectStoragePath, sha: str) -> bool:
    """Whether the partition's data file is still the one we wrote."""
    try:
        return _sha256((part / DATA_FILE).read_bytes()) == sha
    except _replaced_errors():
        return False  # replaced or removed while we read it back: another run is writing


def _modified(info: dict[str, Any]) -> float:
    """A file's modification time from an fsspec ``info`` (local ``mtime``, S3 ``LastModified``)."""
    value = info.get("mtime", info.get("LastModified", info.get("created", 0)))
    return value.timestamp() if hasattr(value, "timestamp") else float(value or 0)


def _below(files: dict[str, Any], folder: str) -> set[str]:
    """The names of the folders between ``folder`` and its files (a ``run=`` folder inside another one is an
    ad-hoc window's: the inner one is the run's staging)."""
    prefix = folder.rstrip("/") + "/"
    return {part for path in files for part in path[len(prefix):].split("/")[:-1]}


def _unlink(path: ObjectStoragePath) -> None:
    # unlink(missing_ok=True) checks, then removes: a concurrent writer can remove the file in between.
    try:
        path.unlink(missing_ok=True)
    except FileNotFoundError:
        pass


def _mkdir(part: ObjectStoragePath) -> None:
    # Object stores have no folders, and s3fs's mkdir creates a missing *bucket*: a mistyped bucket name
    # would silently become a new bucket. Only a local disk needs its folders made.
    if part.protocol in ("file", "local"):
        part.mkdir(parents=True, exist_ok=True)


def frame_to_parquet(frame: pd.DataFrame) -> bytes:
    """Serialise to Parquet the way Athena, DuckDB and Spark all read: snappy, millisecond UTC timestamps."""
    import pyarrow as pa

    return table_to_parquet(pa.Table.from_pandas(frame, preserve_index=False))


def table_to_parquet(table: Any) -> bytes:
    """:func:`frame_to_parquet` for an Arrow table."""
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf, compression="snappy", coerce_timestamps="ms", allow_truncated_timestamps=True)
    return buf.getvalue()


def _sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def sha256_of(payload: bytes) -> str:
    """The hex SHA-256 of a stored file's bytes: the version a reference names (a partition's data file,
    the alert payload ``post_alert`` must post)."""
    return _sha256(payload)


def _json_bytes(document: Any) -> bytes:
    return json.dumps(document, indent=2, sort_keys=True, default=str, allow_nan=False).encode()
