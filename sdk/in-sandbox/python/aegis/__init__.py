"""AEGIS in-sandbox SDK (stdlib only). Mounted read-only by the runtime; `import aegis`.

aegis.input() / aegis.output(v) / aegis.log(...) / aegis.llm.chat(messages, model="default", tools=None, stream=False)
aegis.tools.call(name, args) / aegis.tools.list()  (spec.tools; a refused call raises ToolDenied)
aegis.memory.store(text, meta) / aegis.memory.search(query, k, filter) / aegis.memory.forget(id)  (spec.memory;
without it MemoryDenied)
aegis.swarm.spawn(agent, input, wait=True, timeout=60) / aegis.swarm.child(id)  (spec.swarm; a refused spawn raises
SwarmDenied with the server's reason)
Reads AEGIS_API_URL (default http://127.0.0.1:3129) and AEGIS_TOKEN from the environment. Namespaces such as
aegis.tools, aegis.memory and aegis.swarm slot in beside `llm` as further `_Api` subclasses over the same transport.
"""
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

__all__ = ["input", "output", "log", "llm", "AegisError", "AuthenticationError", "PermissionDenied",
           "BudgetExceeded", "RateLimited", "UpstreamError", "ToolDenied", "tools", "MemoryDenied", "memory",
           "SwarmDenied", "swarm"]


class AegisError(Exception):
    """Base of every error the SDK raises; `status` is the HTTP status, `code` the gateway's code."""

    def __init__(self, message, status=None, code=None):
        super().__init__(message)
        self.status = status
        self.code = code


class AuthenticationError(AegisError): pass
class PermissionDenied(AegisError): pass
class BudgetExceeded(AegisError): pass
class RateLimited(AegisError): pass
class UpstreamError(AegisError): pass
class ToolDenied(PermissionDenied): pass
class MemoryDenied(PermissionDenied): pass
class SwarmDenied(PermissionDenied): pass


def _raise_for(status, body):
    err = (body or {}).get("error") if isinstance(body, dict) else None
    message = err.get("message") if isinstance(err, dict) else f"HTTP {status}"
    code = err.get("code") if isinstance(err, dict) else None
    if status == 401: raise AuthenticationError(message, status, code)
    if status == 403 and code == "tool_denied": raise ToolDenied(message, status, code)
    if status == 403 and code == "memory_denied": raise MemoryDenied(message, status, code)
    if status == 403 and code == "swarm_denied": raise SwarmDenied(message, status, code)
    if status == 403: raise PermissionDenied(message, status, code)
    if status == 429 and code == "budget_exhausted": raise BudgetExceeded(message, status, code)
    if status == 429: raise RateLimited(message, status, code)
    if status >= 500: raise UpstreamError(message, status, code)
    raise AegisError(message, status, code)


class _Transport:
    def __init__(self):
        self.url = os.environ.get("AEGIS_API_URL", "http://127.0.0.1:3129").rstrip("/")
        self.token = os.environ.get("AEGIS_TOKEN", "")

    def post(self, path, body, stream=False, method="POST", timeout=300):
        req = urllib.request.Request(self.url + path, data=None if body is None else json.dumps(body).encode(),
                                     method=method,
                                     headers={"content-type": "application/json",
                                              "authorization": "Bearer " + self.token})
        try:
            res = urllib.request.urlopen(req, timeout=timeout)
        except urllib.error.HTTPError as e:
            try:
                parsed = json.loads(e.read().decode() or "{}")
            except ValueError:
                parsed = None
            _raise_for(e.code, parsed)
        except urllib.error.URLError as e:
            raise AegisError(f"AEGIS API unreachable at {self.url}: {e.reason}") from None
        if not stream:
            with res:
                return json.loads(res.read().decode())
        return self._events(res)

    @staticmethod
    def _events(res):
        with res:
            for raw in res:
                line = raw.decode().rstrip("\r\n")
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                event = json.loads(data)
                if "error" in event:
                    _raise_for(500, event)
                yield event


class _Api:
    def __init__(self, transport):
        self._t = transport


class _Llm(_Api):
    def chat(self, messages, model="default", tools=None, stream=False, **params):
        """Chat Completions through the AEGIS gateway. Returns {content, tool_calls, finish_reason, usage}, or with
        stream=True an iterator of text deltas."""
        body = {"model": model, "messages": messages, "stream": bool(stream), **params}
        if tools:
            body["tools"] = tools
        if not stream:
            reply = self._t.post("/v1/chat/completions", body)
            choice = reply["choices"][0]
            return {"content": choice["message"].get("content"), "tool_calls": choice["message"].get("tool_calls", []),
                    "finish_reason": choice.get("finish_reason"), "usage": reply.get("usage")}
        return (c["choices"][0]["delta"].get("content") or "" for c in self._t.post("/v1/chat/completions", body, True)
                if c.get("choices"))


class _Tools(_Api):
    def call(self, name, args=None):
        """Calls a granted tool (fs.read, cmd.run, http.fetch, mcp:<server>/<tool>…) through the AEGIS tool gateway;
        returns its result. Raises ToolDenied (with the reason) when policy refuses the call. A tool granted with
        `approval: required` blocks until a human approves (then runs) or denies / lets it time out (ToolDenied)."""
        return self._t.post("/v1/tools/" + urllib.parse.quote(name, safe=":/."), {"arguments": args or {}},
                            timeout=3900)["result"]

    def list(self):
        """The granted tools: [{name, description, inputSchema}]."""
        return self._t.post("/v1/tools", None, method="GET")["tools"]


class _Memory(_Api):
    def store(self, text, meta=None):
        """Stores a memory in this agent's own scope (spec.memory); returns {id, text, meta, created_at…}. Secret
        values and placeholders are redacted before it is stored."""
        return self._t.post("/v1/memory/store", {"text": text, "meta": meta or {}})

    def search(self, query, k=5, filter=None):  # noqa: A002 - the SDK's documented name
        """The k memories most relevant to `query` (own scope, plus agents that share theirs with this one), best
        first: [{id, text, meta, score, similarity, recency, outcomeWeight, agent, executionId, outcome…}].
        filter: {"meta": {key: value}, "outcome": "succeeded"|"failed", "source", "executionId", "createdAfter"}."""
        body = {"query": query, "k": k}
        if filter:
            body["filter"] = filter
        return self._t.post("/v1/memory/search", body)["memories"]

    def forget(self, id):  # noqa: A002
        """Deletes one of this agent's memories; False when there is none (another agent's id is not found)."""
        try:
            return self._t.post("/v1/memory/forget", {"id": id}).get("forgotten") is True
        except AegisError as e:
            if e.status == 404:
                return False
            raise


# --- swarm: spawn and children (issue 16, ADR 0140) ---
class _SwarmSpawn(_Api):
    def spawn(self, agent, input=None, wait=True, timeout=60):  # noqa: A002 - the SDK's documented name
        """Starts a child execution of `agent` (one of spec.swarm.canSpawn) with `input`; it runs with no more
        authority than this one. Returns {id, agent, status, done, reason, output}: with wait=True once the child
        ended or `timeout` seconds passed (then done is False — poll aegis.swarm.child(id)), else at once. Raises
        SwarmDenied with the reason when policy refuses (canSpawn, maxChildren, maxDepth, budget.executions)."""
        body = {"agent": agent, "input": input, "wait": bool(wait)}
        if timeout is not None:
            body["timeout"] = timeout
        return self._t.post("/v1/swarm/spawn", body, timeout=(timeout or 60) + 60)

    def child(self, id):  # noqa: A002
        """A child of this execution as it is now: {id, agent, status, done, reason, output}."""
        return self._t.post("/v1/swarm/children/" + urllib.parse.quote(id, safe=""), None, method="GET")
# --- end swarm spawn ---


class _Lease:
    """A held swarm lock: `token` is its fencing token; a context manager that releases it on exit."""

    def __init__(self, swarm, name, token, expires_at, is_global, ttl):
        self._swarm, self.name, self.token, self.expires_at = swarm, name, token, expires_at
        self._global, self._ttl = is_global, ttl

    def release(self):
        return self._swarm._t.post("/v1/swarm/unlock", {"name": self.name, "token": self.token, "global": self._global})

    def renew(self, ttl=None):
        return self._swarm._t.post("/v1/swarm/renew", {"name": self.name, "token": self.token,
                                                       "ttl": ttl or self._ttl, "global": self._global})

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False


class _SwarmBus(_Api):
    def publish(self, topic, message):
        """Publishes a JSON value to a topic of this swarm (spec.swarm); returns its id (ordered per topic)."""
        return self._t.post("/v1/swarm/publish", {"topic": topic, "message": message})["id"]

    def subscribe(self, topic, after=None, timeout=30, limit=100):
        """Messages after `after` (the last id handled: keep it to resume after a restart, drop ids already seen),
        waiting up to `timeout` seconds for the first: {"messages": [{id, topic, sender, message}], "cursor"}."""
        return self._t.post("/v1/swarm/subscribe", {"topic": topic, "after": after or 0, "timeout": timeout,
                                                    "limit": limit}, timeout=timeout + 30)

    def lock(self, name, ttl=30, wait=30, is_global=False):
        """Takes a lock of this swarm (every swarm's with is_global=True), waiting up to `wait` seconds in FIFO
        order; the lease lasts `ttl` seconds. `with aegis.swarm.lock("db") as lease: … lease.token …`."""
        got = self._t.post("/v1/swarm/lock", {"name": name, "ttl": ttl, "wait": wait, "global": is_global},
                           timeout=wait + 30)
        return _Lease(self, name, got["token"], got.get("expiresAt"), is_global, ttl)

    def check_fence(self, name, token, is_global=False):
        """Whether `token` is still the current lease of `name`: {"valid", "current"}."""
        return self._t.post("/v1/swarm/fence", {"name": name, "token": token, "global": is_global})


class _Swarm(_SwarmSpawn, _SwarmBus):
    """aegis.swarm: spawn children, and the bus and locks of this swarm."""


_transport = _Transport()
llm = _Llm(_transport)
tools = _Tools(_transport)
memory = _Memory(_transport)
swarm = _Swarm(_transport)


def input():  # noqa: A001 - the agent contract's name
    """The execution's input (JSON), from /run/aegis/input.json (AEGIS_INPUT_FILE overrides)."""
    path = os.environ.get("AEGIS_INPUT_FILE", "/run/aegis/input.json")
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def output(value):
    """Sets the execution's output (JSON) at /run/aegis/output.json (AEGIS_OUTPUT_FILE overrides)."""
    path = os.environ.get("AEGIS_OUTPUT_FILE", "/run/aegis/output.json")
    with open(path, "w") as f:
        json.dump(value, f)


def log(*args):
    """A log line on stderr (it becomes a log line of the execution)."""
    print(*args, file=sys.stderr, flush=True)
