"""AegisClient: the REST API of an AEGIS server, standard library only (http.client, json)."""

from __future__ import annotations

import http.client
import json
import os
import platform
import random
import socket
import ssl
import time
import urllib.parse
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

from . import __version__
from .errors import AegisError, WaitTimeoutError, code_for_status, error_from_body, make_error
from .pack import pack_agent

Json = Dict[str, Any]

TERMINAL_STATUSES = ("succeeded", "failed", "timeout", "oom", "killed")
"""The statuses an execution ends in."""

# Errors raised before anything reached the server: retrying them can never repeat an action.
_NOT_SENT = (ConnectionRefusedError, FileNotFoundError, socket.gaierror)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout: Optional[float]) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class AegisClient:
    """A client for ``aegis server``.

    Args:
        server: ``http(s)://host:port`` (a path prefix is kept) or ``unix:/path/to/aegis.sock``.
        api_key: ``aegis_...``; sent as ``Authorization: Bearer`` over TCP, never over the unix socket.
        timeout: seconds to wait for any one answer (a ``wait`` is added on top).
        retries: tries per call, the first included, for what may safely be repeated (see README).
        stream_idle_timeout: seconds without a byte (not even a heartbeat) before a log stream is reopened.
        stream_reconnects: drops in a row without a new line before ``follow_logs`` gives up.
    """

    def __init__(
        self,
        server: str,
        api_key: Optional[str] = None,
        *,
        timeout: float = 60.0,
        retries: int = 3,
        stream_idle_timeout: float = 60.0,
        stream_reconnects: int = 10,
        ssl_context: Optional[ssl.SSLContext] = None,
    ) -> None:
        text = server.strip()
        self._socket_path: Optional[str] = None
        if text.startswith("unix:"):
            path = text[len("unix:"):]
            path = path[2:] if path.startswith("//") else path
            if not path.startswith("/"):
                raise make_error("USAGE", f'server "{server}": a unix socket needs an absolute path', 0,
                                 {"hint": "e.g. unix:/run/aegis/aegis.sock"})
            self._socket_path = path
            self.server = f"unix:{path}"
            self._prefix = ""
        else:
            url = urllib.parse.urlsplit(text)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise make_error("USAGE", f'server "{server}" is not an http(s):// URL or unix: path', 0,
                                 {"hint": "e.g. http://127.0.0.1:8088 or unix:/run/aegis/aegis.sock"})
            if url.username or url.password:
                raise make_error("USAGE", f'server "{server}" has credentials in it', 0,
                                 {"hint": "pass the API key as api_key instead"})
            self._url = url
            self._prefix = url.path.rstrip("/")
            self.server = f"{url.scheme}://{url.netloc}{self._prefix}"
        self._api_key = api_key or None
        self._timeout = timeout
        self._retries = max(1, int(retries))
        self._idle = stream_idle_timeout
        self._reconnects = stream_reconnects
        self._ssl = ssl_context
        self._user_agent = f"aegis-sdk-python/{__version__} python/{platform.python_version()}"

    # ── agents ────────────────────────────────────────────────────────────────────────────────────────────────

    def deploy(self, agent: Union[str, "os.PathLike[str]", bytes]) -> Json:
        """Deploys an agent directory (packed with pack_agent, honouring .aegisignore) or a .tar.gz's bytes.

        Returns the DeployResult: ``{"agent", "revision", "created"}`` (``created`` False: nothing changed).
        """
        data = bytes(agent) if isinstance(agent, (bytes, bytearray)) else pack_agent(agent).data
        return self._json("write", "POST", "/v1/agents", body=data, content_type="application/gzip")

    def list_agents(self) -> List[Json]:
        return self._json("read", "GET", "/v1/agents")["agents"]

    def get_agent(self, name: str) -> Json:
        """``{"agent", "revisions", "pools"}``."""
        return self._json("read", "GET", f"/v1/agents/{_q(name)}")

    def rollback(self, name: str, revision: Optional[int] = None) -> Json:
        return self._json("write", "POST", f"/v1/agents/{_q(name)}/rollback",
                          json_body={} if revision is None else {"revision": revision})

    def delete_agent(self, name: str) -> None:
        self._json("write", "DELETE", f"/v1/agents/{_q(name)}")

    # ── executions ────────────────────────────────────────────────────────────────────────────────────────────

    def exec(self, agent: str, input: Any = None, *, wait: Optional[str] = None) -> Json:
        """Starts an execution of ``agent`` (``name``, ``name@3``, ``name@1.2.0``) and returns it.

        Without ``wait`` the answer comes at once (status ``queued`` or ``running``); with it (``"30s"``, ``"2m"``,
        server cap 5m) when the execution ends or ``wait`` passes.
        """
        body: Json = {"agent": agent}
        if input is not None:
            body["input"] = input
        return self._json("create", "POST", "/v1/executions", query={"wait": wait}, json_body=body,
                          extra_timeout=_seconds(wait))

    create_execution = exec

    def get_execution(self, execution_id: str, *, wait: Optional[str] = None) -> Json:
        return self._json("read", "GET", f"/v1/executions/{_q(execution_id)}", query={"wait": wait},
                          extra_timeout=_seconds(wait))

    def wait(self, execution_id: str, timeout: Optional[float] = None) -> Json:
        """Waits until the execution ends and returns it; WaitTimeoutError after ``timeout`` seconds (None: never)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = 30.0 if deadline is None else max(0.0, min(30.0, deadline - time.monotonic()))
            execution = self.get_execution(execution_id, wait=f"{int(step * 1000)}ms")
            if execution["status"] in TERMINAL_STATUSES:
                return execution
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeoutError(
                    f"execution {execution_id} is still {execution['status']} after {timeout:g} s", execution)

    def ps(self, *, agent: Optional[str] = None, status: Optional[str] = None, limit: Optional[int] = None,
           cursor: Optional[str] = None) -> Json:
        """A page of executions, newest first: ``{"executions", "nextCursor"}``; pass ``nextCursor`` as ``cursor``."""
        return self._json("read", "GET", "/v1/executions",
                          query={"agent": agent, "status": status, "limit": limit, "cursor": cursor})

    def iter_executions(self, *, agent: Optional[str] = None, status: Optional[str] = None,
                        page_size: Optional[int] = None) -> Iterator[Json]:
        """Every execution, newest first, following the cursor page by page."""
        cursor: Optional[str] = None
        while True:
            page = self.ps(agent=agent, status=status, limit=page_size, cursor=cursor)
            yield from page["executions"]
            cursor = page.get("nextCursor")
            if not cursor:
                return

    def cancel(self, execution_id: str) -> Json:
        """Cancels a queued or running execution; returns it."""
        return self._json("write", "POST", f"/v1/executions/{_q(execution_id)}/cancel")

    def logs(self, execution_id: str, *, after: int = 0, limit: Optional[int] = None) -> Json:
        """A page of log lines: ``{"lines", "status", "nextAfter"}``; continue with ``after=page["nextAfter"]``."""
        return self._json("read", "GET", f"/v1/executions/{_q(execution_id)}/logs",
                          query={"after": after or None, "limit": limit})

    def follow_logs(self, execution_id: str, *, after: int = 0) -> Iterator[Json]:
        """Every log line after ``after`` as it is written, then the finished execution, over Server-Sent Events.

        Yields ``{"type": "line", "line": {seq, ts, stream, text}}`` items, then — last —
        ``{"type": "end", "execution": {...}}``. A dropped connection (or one silent for ``stream_idle_timeout``)
        is reopened with ``Last-Event-ID``, so no line is lost or repeated.
        """
        last_seq = after
        drops = 0
        connected = False
        retry_ms: Optional[int] = None
        while True:
            headers = {"accept": "text/event-stream"}
            if last_seq > 0:
                headers["last-event-id"] = str(last_seq)
            try:
                conn, response = self._send("read", "GET", f"/v1/executions/{_q(execution_id)}/logs",
                                            query={"follow": "true", "after": last_seq or None},
                                            headers=headers, timeout=self._idle)
            except AegisError as error:
                if not connected or not error.retryable:
                    raise
                drops = self._after_drop(execution_id, drops + 1, retry_ms)
                continue
            connected = True
            progressed = False
            try:
                kind = response.getheader("content-type", "")
                if not kind.startswith("text/event-stream"):
                    raise make_error("INTERNAL", f"expected an event stream from {self.server}, got {kind!r}",
                                     response.status)
                for event, data, retry in _sse_events(response):
                    if retry is not None:
                        retry_ms = retry
                    if event == "log":
                        line = json.loads(data)
                        if line["seq"] <= last_seq:
                            continue
                        last_seq = line["seq"]
                        progressed = True
                        yield {"type": "line", "line": line}
                    elif event == "end":
                        yield {"type": "end", "execution": json.loads(data)}
                        return
                    elif event == "error":
                        body = json.loads(data)
                        raise error_from_body(body, 200) or make_error("INTERNAL", f"the log stream failed: {data}")
            except (OSError, http.client.HTTPException):
                pass  # a dropped or silent connection: resumed below
            finally:
                conn.close()
            drops = self._after_drop(execution_id, 1 if progressed else drops + 1, retry_ms)

    def _after_drop(self, execution_id: str, drops: int, retry_ms: Optional[int]) -> int:
        if drops > self._reconnects:
            raise make_error("UNAVAILABLE", f"the log stream of {execution_id} from {self.server} dropped "
                             f"{drops} times in a row without a new line")
        time.sleep(max((retry_ms or 0) / 1000, min(10.0, 0.25 * 2 ** (drops - 1))))
        return drops

    def audit(self, execution_id: str) -> List[Json]:
        return self._json("read", "GET", f"/v1/executions/{_q(execution_id)}/audit")["entries"]

    def health(self) -> Json:
        return self._json("read", "GET", "/healthz")

    # ── plumbing ──────────────────────────────────────────────────────────────────────────────────────────────

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._socket_path is not None:
            return _UnixConnection(self._socket_path, timeout)
        if self._url.scheme == "https":
            return http.client.HTTPSConnection(self._url.hostname or "", self._url.port, timeout=timeout,
                                               context=self._ssl)
        return http.client.HTTPConnection(self._url.hostname or "", self._url.port, timeout=timeout)

    def _json(self, mode: str, method: str, path: str, *, query: Optional[Mapping[str, Any]] = None,
              json_body: Any = None, body: Optional[bytes] = None, content_type: Optional[str] = None,
              extra_timeout: float = 0.0) -> Any:
        if json_body is not None:
            body, content_type = json.dumps(json_body).encode("utf-8"), "application/json"
        headers = {"content-type": content_type} if content_type else {}
        conn, response = self._send(mode, method, path, query=query, body=body, headers=headers,
                                    timeout=self._timeout + extra_timeout)
        try:
            data = response.read()
        except (OSError, http.client.HTTPException) as error:
            raise self._unreachable(error) from error
        finally:
            conn.close()
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError as error:
            raise make_error("INTERNAL", f"the answer to {method} {path} is not JSON: {error}") from error

    def _send(self, mode: str, method: str, path: str, *, query: Optional[Mapping[str, Any]] = None,
              body: Optional[bytes] = None, headers: Optional[Mapping[str, str]] = None,
              timeout: float) -> Tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Sends, retrying per ``mode``; returns a 2xx answer whose body is still to be read."""
        params = {k: str(v) for k, v in (query or {}).items() if v is not None}
        target = self._prefix + path + ("?" + urllib.parse.urlencode(params) if params else "")
        all_headers = {"user-agent": self._user_agent, "accept": "application/json", **(headers or {})}
        if self._api_key and self._socket_path is None:
            all_headers["authorization"] = f"Bearer {self._api_key}"
        attempt = 0
        while True:
            attempt += 1
            conn = self._connection(timeout)
            try:
                conn.request(method, target, body=body, headers=all_headers)
                response = conn.getresponse()
            except (OSError, http.client.HTTPException) as error:
                conn.close()
                if (mode == "read" or isinstance(error, _NOT_SENT)) and attempt < self._retries:
                    time.sleep(_backoff(attempt))
                    continue
                raise self._unreachable(error) from error
            if 200 <= response.status < 300:
                return conn, response
            error = self._error(response)
            conn.close()
            retry = (error.code in ("RATE_LIMITED", "QUEUE_FULL", "UNAVAILABLE") if mode == "read"
                     else error.code in ("RATE_LIMITED", "QUEUE_FULL") if mode == "create"
                     else error.code == "RATE_LIMITED")
            if retry and attempt < self._retries:
                delay = error.retry_after_ms / 1000 if error.retry_after_ms is not None else _backoff(attempt)
                if delay <= 30:
                    time.sleep(delay)
                    continue
            raise error

    def _error(self, response: http.client.HTTPResponse) -> AegisError:
        retry_after = response.getheader("retry-after")
        retry_after_ms = int(retry_after) * 1000 if retry_after and retry_after.strip().isdigit() else None
        try:
            text = response.read()
        except (OSError, http.client.HTTPException):
            text = b""
        try:
            parsed = error_from_body(json.loads(text), response.status, retry_after_ms)
        except ValueError:
            parsed = None
        if parsed is not None:
            return parsed
        snippet = text[:200].decode("utf-8", "replace").strip()
        return make_error(code_for_status(response.status),
                          f"HTTP {response.status} {response.reason}" + (f": {snippet}" if snippet else ""),
                          response.status,
                          {"hint": f"the answer is not an AEGIS error; is {self.server} an AEGIS server?"},
                          retry_after_ms)

    def _unreachable(self, error: BaseException) -> AegisError:
        return make_error("UNAVAILABLE", f"cannot reach the AEGIS server at {self.server} ({error!r})")


def _q(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _backoff(attempt: int) -> float:
    return 0.25 * 2 ** (attempt - 1) * (0.5 + random.random())


def _seconds(duration: Optional[str]) -> float:
    """``30s``, ``1500ms``, ``2m``, ``45`` (seconds) → seconds; 0 for None."""
    if not duration:
        return 0.0
    text = duration.strip()
    for suffix, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
        if text.endswith(suffix) and text[: -len(suffix)].isdigit():
            return int(text[: -len(suffix)]) * scale
    return float(text) if text.isdigit() else 0.0


def _sse_events(response: http.client.HTTPResponse) -> Iterator[Tuple[str, str, Optional[int]]]:
    """(event type, data, retry ms) per dispatched Server-Sent Event: fields per the WHATWG rules, `:` comments
    (the server's heartbeats) skipped; lines end in LF or CRLF (the server never sends a lone CR)."""
    event, data, retry = "", [], None  # type: str, List[str], Optional[int]
    first = True
    while True:
        raw = response.readline()
        if not raw:
            return  # the connection ended; an event without its closing blank line is discarded
        line = raw.decode("utf-8", "replace")
        if first:
            line, first = line.lstrip("\ufeff"), False
        line = line.rstrip("\r\n")
        if line == "":
            if data:
                yield event or "message", "\n".join(data), retry
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
        elif field == "retry" and value.isdigit():
            retry = int(value)
