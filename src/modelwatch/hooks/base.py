"""Shared HTTP machinery of the modelwatch hooks: connection -> base URL, auth, one retrying ``_request``.

Importing this module loads only ``requests`` and Airflow's SDK: botocore and the Amazon provider are
imported when a SigV4 connection is first used, so DAG parsing stays light.
"""

from __future__ import annotations

import base64
import email.utils
import functools
import inspect
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import requests
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowFailException
from requests.auth import AuthBase

from modelwatch.connections import AUTH_MODES
from modelwatch.errors import ModelwatchError, UpstreamUnavailable

#: HTTP statuses worth another attempt: request timeout, rate limiting and server-side failures.
RETRY_STATUSES: frozenset[int] = frozenset({408, 429, *range(500, 600)})
#: Attempts per request, the first included.
MAX_ATTEMPTS = 4
#: Delay before the second attempt; doubled before each further one.
BACKOFF_BASE_SECONDS = 1.0
#: Ceiling of the exponential backoff.
BACKOFF_MAX_SECONDS = 30.0
#: A server's Retry-After is honoured up to this long; beyond it the task is better off failing and
#: being retried by Airflow than holding a worker slot.
RETRY_AFTER_MAX_SECONDS = 120.0
#: Per-request timeout unless the connection's extra ``timeout`` says otherwise.
DEFAULT_TIMEOUT_SECONDS = 60.0
#: Default SigV4 service: Amazon Managed Service for Prometheus (queries and its Alertmanager).
DEFAULT_SIGV4_SERVICE = "aps"
#: Frozen AWS credentials are re-read this often, so temporary (STS) credentials rotate in long tasks.
CREDENTIALS_REFRESH_SECONDS = 300.0

# Transport failures: the request may never have reached the server, so another attempt is safe.
_RETRY_EXCEPTIONS: tuple[type[Exception], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)
# URL userinfo: everything from ``//`` to the LAST ``@`` of the authority (a password may hold an unencoded
# ``@``: ``http://user:p@ss@host`` is host ``host``, as urllib and urllib3 read it)
_USERINFO = re.compile(r"//[^/?#\s]*@")
# an Authorization credential in any text (an echoed header, a header dict's repr), known to us or not: after
# "Authorization" any scheme's value; elsewhere a Bearer/Basic credential that looks like one (a digit, a
# base64 pad or an inner capital in it), so that prose ("bearer token", "Basic authentication") stays readable
_AUTH_HEADER = re.compile(
    r"""(authorization['"]?\s*[:=]\s*['"]?(?:(?:Bearer|Basic|Digest|Token|ApiKey|Negotiate|AWS4-HMAC-SHA256)"""
    r"""(?:\s+|%20|\+))?)[^\s'",}]+""",
    re.IGNORECASE,
)
_AUTH_CREDENTIAL = re.compile(
    r"\b(Bearer|Basic)(?:\s+|%20|\+)(?=[A-Za-z0-9._~+/=-]*[0-9=]|[A-Za-z0-9._~+/=-]+[A-Z])[A-Za-z0-9._~+/=-]{6,}"
)
# session headers every modelwatch request carries: any other header value is treated as a secret
_OWN_HEADERS = frozenset({"user-agent", "accept", "accept-encoding", "connection"})
_AMP_REGION = re.compile(r"aps-workspaces\.([a-z0-9-]+)\.amazonaws\.com")
_BODY_EXCERPT = 500


def basic_auth_token(login: str | None, password: str | None) -> str | None:
    """The credential part of an HTTP basic ``Authorization`` header (``base64(login:password)``)."""
    if not password:
        return None
    return base64.b64encode(f"{login or ''}:{password}".encode()).decode()


def _strip_userinfo(url: str) -> str:
    return _USERINFO.sub("//", url)


class ConnectionMisconfigured(ModelwatchError, AirflowFailException):
    """A connection a request cannot be built from (a token an HTTP header cannot carry, a URL requests
    cannot parse): the same on every try, so the task fails at once. The message names the connection and
    the field, never the value."""


class HookRequestError(ModelwatchError):
    """A request failed in a way that is neither a transport failure nor an HTTP answer (the redacted text
    of what the HTTP stack raised, which is not chained)."""


def secret_forms(value: str | None) -> list[str]:
    """The forms in which a credential can show up in a message: as given, stripped of surrounding
    whitespace, and URL-encoded (both ways ``quote`` writes it); whitespace-only values are no secret."""
    if not value or not value.strip():
        return []
    forms = [value, value.strip(), quote(value, safe=""), quote(value), quote(value.strip(), safe="")]
    return [f for f in dict.fromkeys(forms) if f.strip()]


def redact_text(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret (longest first), every ``Bearer``/``Basic`` credential and every URL
    userinfo replaced by ``***``."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    text = _AUTH_HEADER.sub(lambda m: f"{m.group(1)}***", text)
    text = _AUTH_CREDENTIAL.sub(lambda m: f"{m.group(1)} ***", text)
    return _USERINFO.sub("//***@", text)


def _mask_in_airflow(value: str) -> None:
    """Register a secret with Airflow's secrets masker (task logs, the supervisor's logs): Airflow masks a
    connection's raw password itself, not its base64 or stripped forms."""
    with suppress(Exception):
        from airflow.sdk.log import mask_secret

        mask_secret(value)


def _chain_texts(exc: BaseException) -> Iterable[str]:
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield str(link)
        yield from (a for a in link.args if isinstance(a, str))
        link = link.__cause__ or link.__context__


def scrub_exception(exc: Exception, redact: Callable[[str], str]) -> Exception:
    """``exc`` as it may leave a hook: unchanged when neither it nor what it chains holds a secret; else a
    copy of the same class whose message and text attributes are redacted, with no chained exceptions
    (the original, with the secret, never reaches a traceback). A foreign exception that cannot be copied
    becomes a :class:`HookRequestError` with its redacted text."""
    if all(redact(t) == t for t in _chain_texts(exc)):
        return exc
    try:
        # a copy made without calling __init__ (whose signature is the class's own), attributes redacted
        clean = type(exc).__new__(type(exc))
        for key, value in vars(exc).items():
            setattr(clean, key, redact(value) if isinstance(value, str) else value)
        clean.args = tuple(redact(a) if isinstance(a, str) else a for a in exc.args)
        if redact(str(clean)) != str(clean):
            raise ValueError("a redacted copy still shows the secret")
    except Exception:
        clean = HookRequestError(redact(f"{type(exc).__name__}: {exc}"))
    clean.__cause__ = clean.__context__ = None
    clean.__suppress_context__ = True
    clean.__traceback__ = exc.__traceback__
    return clean


def _redacting(method: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a hook method so that any exception it raises passes through :func:`scrub_exception`."""
    if getattr(method, "_redacting", False):
        return method

    @functools.wraps(method)
    def wrapper(self: ApiHook, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:
            clean = scrub_exception(exc, self.redact)
            if clean is exc:
                raise
        # raised outside the except block: the original is not even kept as the implicit context
        raise clean

    wrapper._redacting = True  # type: ignore[attr-defined]
    return wrapper


def as_bool(value: Any) -> bool | str:
    # ``verify`` may be a CA bundle path; anything else is read as a boolean.
    if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
        return False
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
        return True
    return value if isinstance(value, str) else bool(value)


def connection_url(conn: Any) -> str:
    """The base URL an Airflow connection names: ``host`` itself when it is a full URL (contains ``://``),
    else ``schema://host:port`` (scheme ``http`` by default); ``""`` when it has no host."""
    host = (conn.host or "").strip()
    if not host:
        return ""
    if "://" in host:
        return host.rstrip("/")
    scheme = (conn.schema or "http").strip() or "http"
    return f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "")


def new_session() -> requests.Session:
    """A session with the headers every modelwatch request carries."""
    session = requests.Session()
    session.headers["User-Agent"] = "modelwatch"
    session.headers["Accept"] = "application/json"
    return session


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait according to a ``Retry-After`` header (delta-seconds or HTTP-date).

    :param value: the header value, or ``None``.
    :return: seconds (never negative), or ``None`` when absent or unparseable.
    """
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    # Wall clock is unavoidable here: the server expressed the delay as a date.
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class SigV4RequestAuth(AuthBase):
    """Sign each prepared request with AWS Signature Version 4 (botocore's signer).

    :param credentials: returns botocore-style credentials (``access_key``, ``secret_key``, ``token``).
    :param region: AWS region of the endpoint.
    :param service: SigV4 service name (``aps`` for Amazon Managed Service for Prometheus).
    """

    def __init__(self, credentials: Callable[[], Any], region: str, service: str = DEFAULT_SIGV4_SERVICE) -> None:
        self._credentials = credentials
        self.region = region
        self.service = service

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        # AWS canonicalises the query string with RFC 3986 escaping (%20, not '+'): send exactly what
        # was signed, or a value with a space fails the signature check.
        parts = urlsplit(r.url or "")
        if parts.query:
            pairs = parse_qsl(parts.query, keep_blank_values=True)
            query = urlencode(pairs, quote_via=quote, safe="-_.~")
            r.url = urlunsplit(parts._replace(query=query))
        headers = {}
        if r.headers.get("Content-Type"):
            headers["Content-Type"] = r.headers["Content-Type"]
        body = r.body if r.body is not None else b""
        aws_request = AWSRequest(method=r.method, url=r.url, data=body, headers=headers)
        SigV4Auth(self._credentials(), self.service, self.region).add_auth(aws_request)
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
            if name in aws_request.headers:
                r.headers[name] = aws_request.headers[name]
        return r


class ApiHook(BaseHook):
    """Base of the HTTP API hooks: resolves the Airflow connection lazily and owns the one ``_request``.

    Connection fields: ``host`` (a full base URL when it contains ``://``, e.g. an AMP workspace URL,
    else a host name), ``port``, ``schema`` (URL scheme, default ``http``), ``login``/``password``.
    Extras: ``auth`` (``none`` | ``basic`` | ``bearer`` | ``sigv4``; bearer takes the token from the
    password), ``path_prefix``, ``timeout`` (seconds, default 60), ``verify`` (TLS: bool or CA bundle
    path), and for SigV4 ``region``, ``sigv4_service`` (default ``aps``), ``aws_conn_id`` or static
    ``aws_access_key_id``/``aws_secret_access_key``/``aws_session_token`` (else botocore's default chain).

    :param conn_id: Airflow connection id; default :attr:`default_conn_name`.
    :param max_attempts: attempts per request, the first included.
    :param backoff_base_seconds: delay before the second attempt (tests shrink it).
    :param backoff_max_seconds: ceiling of the backoff.
    :param logger_name: see :class:`airflow.sdk.BaseHook`.
    """

    conn_name_attr: ClassVar[str] = "conn_id"
    default_conn_name: ClassVar[str] = "http_default"
    conn_type: ClassVar[str] = "http"
    hook_name: ClassVar[str] = "HTTP API"
    #: Name used in messages ("Prometheus", "Alertmanager").
    service_name: ClassVar[str] = "HTTP API"
    #: Methods whose exceptions are not passed through :func:`scrub_exception` (see ``__init_subclass__``).
    _not_redacting: ClassVar[frozenset[str]] = frozenset({"redact", "body_excerpt"})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Every public method of every hook (and get_conn/_request) raises only redacted exceptions: one
        # place, whatever a method builds its messages from, rather than a redact() call at each site.
        super().__init_subclass__(**kwargs)
        _wrap_methods(cls)

    def __init__(
        self,
        conn_id: str | None = None,
        *,
        max_attempts: int = MAX_ATTEMPTS,
        backoff_base_seconds: float = BACKOFF_BASE_SECONDS,
        backoff_max_seconds: float = BACKOFF_MAX_SECONDS,
        logger_name: str | None = None,
    ) -> None:
        super().__init__(logger_name=logger_name)
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.conn_id = conn_id or self.default_conn_name
        self.max_attempts = max_attempts
        self.backoff_base_seconds = backoff_base_seconds
        self.backoff_max_seconds = backoff_max_seconds
        #: HTTP requests sent (retries included) and response body bytes received, for benchmarks.
        self.requests_made = 0
        self.bytes_received = 0
        self._session: requests.Session | None = None
        self._base_url = ""
        self._timeout = DEFAULT_TIMEOUT_SECONDS
        self._secrets: list[str] = []
        self._sleep: Callable[[float], None] = time.sleep
        # the counters are shared by a hook's download threads (MLflow artifacts): += is not atomic
        self._count_lock = threading.Lock()

    # -- connection -------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """Base URL of the API (path prefix included), credentials removed; resolves the connection."""
        self.get_conn()
        return _strip_userinfo(self._base_url)

    def get_conn(self) -> requests.Session:
        """Resolve the Airflow connection (once) and return a configured :class:`requests.Session`.

        :raises ModelwatchError: on an unknown ``auth`` mode or an incomplete SigV4 setup.
        """
        if self._session is not None:
            return self._session
        conn = self.get_connection(self.conn_id)
        extra: Mapping[str, Any] = conn.extra_dejson or {}
        base = connection_url(conn)
        if not base:
            raise ModelwatchError(f"connection {self.conn_id!r} has no host")
        self._add_url_secrets(base)
        prefix = str(extra.get("path_prefix") or "").strip("/")
        self._base_url = base + (f"/{prefix}" if prefix else "")
        self._timeout = float(extra.get("timeout") or DEFAULT_TIMEOUT_SECONDS)

        session = new_session()
        if "verify" in extra:
            session.verify = as_bool(extra["verify"])
        auth = str(extra.get("auth") or "none").lower()
        if auth not in AUTH_MODES:
            raise ModelwatchError(
                f"connection {self.conn_id!r}: extra auth={auth!r} is not one of {', '.join(AUTH_MODES)}"
            )
        if auth == "basic" and (conn.login or conn.password):
            self._set_basic_auth(session, conn.login, conn.password)
        elif auth == "basic":
            pass  # no login and password: requests sends the host URL's userinfo (if any) as basic auth
        elif auth == "bearer":
            if not (conn.password or "").strip():
                raise ModelwatchError(f"connection {self.conn_id!r}: auth=bearer needs the token in password")
            self._set_bearer(session, conn.password)
        elif auth == "sigv4":
            session.auth = self._sigv4_auth(extra, base)
        self._add_header_secrets(session)
        self._session = session
        self.log.debug("%s connection %r: %s (auth=%s)", self.service_name, self.conn_id, self.base_url, auth)
        return session

    def _sigv4_auth(self, extra: Mapping[str, Any], base: str) -> SigV4RequestAuth:
        region = extra.get("region") or extra.get("region_name")
        if not region and (m := _AMP_REGION.search(base)):
            region = m.group(1)
        if not region:
            raise ModelwatchError(f"connection {self.conn_id!r}: auth=sigv4 needs extra 'region'")
        service = str(extra.get("sigv4_service") or DEFAULT_SIGV4_SERVICE)
        fetch: Callable[[], Any]
        if extra.get("aws_conn_id"):
            aws_conn_id = str(extra["aws_conn_id"])

            def fetch() -> Any:
                from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

                return AwsBaseHook(aws_conn_id=aws_conn_id, region_name=region).get_credentials(region)

        elif extra.get("aws_access_key_id"):
            from botocore.credentials import Credentials

            static = Credentials(
                str(extra["aws_access_key_id"]),
                str(extra.get("aws_secret_access_key") or ""),
                extra.get("aws_session_token"),
            )
            self._add_secret(static.secret_key)
            self._add_secret(static.token)

            def fetch() -> Any:
                return static

        else:

            def fetch() -> Any:
                import botocore.session

                creds = botocore.session.get_session().get_credentials()
                if creds is None:
                    raise ModelwatchError(
                        f"connection {self.conn_id!r}: auth=sigv4 found no AWS credentials "
                        "(set extra aws_conn_id, or configure the default AWS credential chain)"
                    )
                return creds.get_frozen_credentials()

        return SigV4RequestAuth(self._cached_credentials(fetch), str(region), service)

    def _cached_credentials(self, fetch: Callable[[], Any]) -> Callable[[], Any]:
        cache: dict[str, Any] = {}

        def get() -> Any:
            now = time.monotonic()
            if "creds" not in cache or now - cache["at"] > CREDENTIALS_REFRESH_SECONDS:
                creds = fetch()
                self._add_secret(getattr(creds, "secret_key", None))
                self._add_secret(getattr(creds, "token", None))
                cache.update(creds=creds, at=now)
            return cache["creds"]

        return get

    def _add_secret(self, value: str | None) -> None:
        """Know ``value`` as a secret, in every form it may show up in (see :func:`secret_forms`), and have
        Airflow's secrets masker hide it in the task logs too."""
        for form in secret_forms(value):
            if form not in self._secrets:
                self._secrets.append(form)
                _mask_in_airflow(form)

    def _set_bearer(self, session: requests.Session, token: str, *, field: str = "password") -> None:
        """Send ``token`` as ``Authorization: Bearer``.

        A token never holds whitespace (RFC 6750), so surrounding whitespace (the newline a file or
        ``echo`` leaves) is dropped, with a warning naming the connection and the field, never the value.

        :raises ConnectionMisconfigured: when whitespace or a control character is inside the token: no
            HTTP header can carry it.
        """
        self._add_secret(token)
        stripped = token.strip()
        if stripped != token:
            self.log.warning(
                "connection %r: the bearer token (field %s) has leading/trailing whitespace or a newline; "
                "it is sent without it", self.conn_id, field,
            )  # fmt: skip
        if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in stripped):
            raise ConnectionMisconfigured(
                f"connection {self.conn_id!r}: the bearer token (field {field}) contains whitespace, a newline "
                "or a control character inside it, which an HTTP Authorization header cannot carry "
                "(the value is not shown)"
            )
        session.headers["Authorization"] = f"Bearer {stripped}"

    def _set_basic_auth(self, session: requests.Session, login: str | None, password: str | None) -> None:
        """HTTP basic auth with ``login``/``password`` exactly as given: base64 carries any character, and a
        password may really hold spaces; surrounding whitespace only earns a warning (a likely cause of a
        401), naming the connection, never the value."""
        session.auth = (login or "", password or "")
        self._add_secret(password)
        # the Authorization header carries base64(login:password): a server or proxy that echoes request
        # headers in an error would otherwise put the credential into our messages
        self._add_secret(basic_auth_token(login, password))
        if password and password.strip():
            self._add_secret(basic_auth_token(login, password.strip()))
        if password and password != password.strip():
            self.log.warning(
                "connection %r: the password has leading/trailing whitespace or a newline; it is sent as "
                "given (if the server answers 401, check the stored password)", self.conn_id,
            )  # fmt: skip

    def _add_url_secrets(self, url: str) -> None:
        """Secrets of a URL's userinfo: everything before the last ``@`` of the authority, the password
        alone (raw and decoded) and the basic credential requests derives from it."""
        if "//" not in url:
            return
        authority = url.split("//", 1)[1]
        if "@" not in authority:
            return
        userinfo = authority.rpartition("@")[0]
        self._add_secret(userinfo)
        login, _, password = userinfo.partition(":")
        for secret in (password, unquote(password), unquote(userinfo)):
            self._add_secret(secret)
        self._add_secret(basic_auth_token(unquote(login), unquote(password)))

    def _add_header_secrets(self, session: requests.Session) -> None:
        """Every header value of the session that modelwatch did not set itself is a credential (an
        ``Authorization`` of any scheme, a header a connection sets): the part after a scheme
        (``Bearer ***`` stays readable), else the whole value."""
        for name, value in session.headers.items():
            if name.lower() in _OWN_HEADERS or not isinstance(value, str):
                continue
            scheme, _, credential = value.partition(" ")
            self._add_secret(credential if credential and scheme.isalpha() else value)

    def redact(self, text: str) -> str:
        """``text`` with every credential this hook knows of (in its stripped, URL-encoded and base64
        basic-auth forms), any ``Bearer``/``Basic`` credential and any URL userinfo replaced by ``***``.

        :param text: message about to go into a log line or an exception.
        """
        return redact_text(text, self._secrets)

    # -- requests ---------------------------------------------------------------------------------

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        delay = min(self.backoff_max_seconds, self.backoff_base_seconds * 2 ** (attempt - 1))
        server_says = parse_retry_after(retry_after)
        if server_says is not None:
            delay = max(delay, min(server_says, RETRY_AFTER_MAX_SECONDS))
        return delay

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        json: Any = None,
        data: Any = None,
    ) -> requests.Response:
        """Send one API request, retrying transport failures and :data:`RETRY_STATUSES`.

        Backoff is exponential (:data:`BACKOFF_BASE_SECONDS` doubled per attempt, at most
        :data:`BACKOFF_MAX_SECONDS`), or longer when the server sends ``Retry-After``.

        :param method: HTTP method.
        :param path: path under the base URL, starting with ``/``.
        :param params: query parameters (a mapping or a list of pairs, for repeated keys).
        :param json: JSON body.
        :param data: form body (a mapping is sent form-encoded).
        :return: the last response, whatever its status: callers turn error statuses into their own
            exceptions, since only they know how to read the body.
        :raises UpstreamUnavailable: when every attempt failed in transport (refused, reset, timed out).
        """
        session = self.get_conn()
        url = self._base_url + path
        url_path = urlsplit(_strip_userinfo(url)).path
        server = _strip_userinfo(self._base_url)
        last_error = ""
        for attempt in range(1, self.max_attempts + 1):
            started = time.monotonic()
            with self._count_lock:
                self.requests_made += 1
            # Every exception of the HTTP stack becomes text here, redacted, and is raised (if at all) outside
            # the except block: the original, whose message or request may carry a credential, is never
            # chained into a traceback, a task log or a failure email.
            failure: Exception | None = None
            try:
                response = session.request(
                    method, url, params=params, json=json, data=data, timeout=self._timeout
                )
            except _RETRY_EXCEPTIONS as exc:
                last_error = self.redact(f"{type(exc).__name__}: {exc}")
            except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL,
                    requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema) as exc:
                failure = ConnectionMisconfigured(self.redact(
                    f"connection {self.conn_id!r}: {method} {server}{url_path} cannot be sent: "
                    f"{type(exc).__name__}: {exc}"))  # fmt: skip
            except ModelwatchError as exc:  # ours (e.g. SigV4 without credentials): already worded
                failure = scrub_exception(exc, self.redact)
            except Exception as exc:
                failure = HookRequestError(self.redact(
                    f"{self.service_name} {method} {server}{url_path} (connection {self.conn_id!r}) failed: "
                    f"{type(exc).__name__}: {exc}"))  # fmt: skip
            else:
                last_error = ""
            if failure is not None:
                raise failure
            if last_error:
                elapsed = time.monotonic() - started
                self.log.warning(
                    "%s %s failed after %.3f s (attempt %d/%d): %s",
                    method, url_path, elapsed, attempt, self.max_attempts, last_error,
                )
                if attempt == self.max_attempts:
                    raise UpstreamUnavailable(server, url_path, last_error, attempt)
                self._sleep(self._backoff(attempt, None))
                continue
            elapsed = time.monotonic() - started
            size = len(response.content)
            with self._count_lock:
                self.bytes_received += size
            self.log.info(
                "%s %s -> HTTP %d in %.3f s (%d bytes)", method, url_path, response.status_code, elapsed, size
            )
            if response.status_code in RETRY_STATUSES and attempt < self.max_attempts:
                delay = self._backoff(attempt, response.headers.get("Retry-After"))
                self.log.warning(
                    "%s %s: HTTP %d, retrying in %.2f s (attempt %d/%d)",
                    method, url_path, response.status_code, delay, attempt, self.max_attempts,
                )
                self._sleep(delay)
                continue
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def body_excerpt(self, response: requests.Response) -> str:
        """The start of a response body, redacted, for error messages."""
        text = response.text or ""
        if len(text) > _BODY_EXCERPT:
            text = text[:_BODY_EXCERPT] + "..."
        return self.redact(text.strip())

    # -- Airflow UI ---------------------------------------------------------------------------------
    # The form's fields come from modelwatch.connections through the provider; the Test button calls this.

    #: The request :meth:`test_connection` sends: the cheapest call that proves address and credentials.
    test_request: ClassVar[tuple[str, str, dict[str, Any]]] = ("GET", "/", {})

    def test_connection(self) -> tuple[bool, str]:
        """Send :attr:`test_request` once (no retries: a person is waiting at the form) and say what came back.

        :return: ``(ok, message)`` as Airflow's connection Test expects; the message names the server, the
            path and the HTTP status or the transport error, credentials redacted.
        """
        method, path, kwargs = self.test_request
        try:
            # first: resolving the connection may set the hook's retry policy (MLflow's extras), which the
            # single attempt below must override, not be overridden by
            self.get_conn()
        except Exception as exc:  # a connection that cannot be resolved is the answer the form shows
            return False, self.redact(f"{self.service_name} connection {self.conn_id!r}: {exc}")
        attempts, self.max_attempts = self.max_attempts, 1
        try:
            started = time.monotonic()
            response = self._request(method, path, **kwargs)
            elapsed = time.monotonic() - started
            problem = self.test_problem(response)
        except Exception as exc:  # any failure is the answer the form shows
            return False, self.redact(f"{self.service_name} connection {self.conn_id!r}: {exc}")
        finally:
            self.max_attempts = attempts
        where = f"{self.service_name} at {self.base_url} ({method} {path})"
        if problem:
            return False, f"{where}: {problem}"
        return True, f"{where} answered HTTP {response.status_code} in {elapsed * 1000:.0f} ms"

    def test_problem(self, response: requests.Response) -> str | None:
        """What is wrong with the answer to :attr:`test_request`, or ``None`` when it proves the connection."""
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}: {self.body_excerpt(response)!r}"


def _wrap_methods(cls: type) -> None:
    """Wrap ``cls``'s own public methods, ``get_conn`` and ``_request`` with :func:`_redacting`."""
    skip = getattr(cls, "_not_redacting", frozenset())
    for name, value in list(vars(cls).items()):
        if not inspect.isfunction(value) or name in skip or inspect.isgeneratorfunction(value):
            continue
        if name.startswith("_") and name not in ("_request",):
            continue
        setattr(cls, name, _redacting(value))


_wrap_methods(ApiHook)
