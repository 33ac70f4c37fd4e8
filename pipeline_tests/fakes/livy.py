"""A fake Synapse Livy batches API that really runs the submitted job, with local Spark.

Speaks the wire format of `{endpoint}/livyApi/versions/2020-12-01/sparkPools/{pool}/batches`
(REFERENCE §5) over HTTPS (fakes/tls.py), checks the bearer token the stub `az` hands out for
`https://dev.azuresynapse.net` and the POST body's schema, and then does what a pool does:
downloads the batch's `file` and `pyFiles` from storage (the abfss:// URL's container and path,
read from Azurite through its connection string), runs `python file args…` with the zip on
`PYTHONPATH` and the batch's `conf` as spark-submit options (master `local[2]`), and serves the
process's output as the Livy log. State goes not_started → starting → running → success, or
dead (exit code ≠ 0), or killed (DELETE kills the process group).

Knobs on `LivyState`: `die_next_submit` (the next batch is `dead` without running, as when a
pool cannot allocate), `reject_tokens` (every request gets Synapse's 401), `throttle_next`
(answer the next N requests with 429 + Retry-After).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from azure.storage.blob import BlobServiceClient

from pipeline_tests.fakes.az_cli import token_for
from pipeline_tests.fakes.tls import TestCA, serve_https

SYNAPSE_RESOURCE = "https://dev.azuresynapse.net"
API_VERSION = "2020-12-01"
_ABFSS = re.compile(
    r"^abfss://(?P<container>[^@/]+)@(?P<account>[^./]+)\.dfs\.core\.windows\.net/(?P<path>.+)$"
)
_MEMORY = re.compile(r"^[1-9][0-9]*[kmgt]$")
# Schema of the POST body: field → accepted type(s).
BODY_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "file": str,
    "args": list,
    "pyFiles": list,
    "conf": dict,
    "driverMemory": str,
    "driverCores": int,
    "executorMemory": str,
    "executorCores": int,
    "numExecutors": int,
    "tags": dict,
}
REQUIRED_FIELDS = ("name", "file")


@dataclass
class Batch:
    id: int
    body: dict[str, Any]
    state: str = "not_started"
    result: str = "Uncertain"
    log_path: Path | None = None
    process: subprocess.Popen | None = None
    cancelled: bool = False
    fixed_log: list[str] = field(default_factory=list)

    def log_lines(self) -> list[str]:
        lines = list(self.fixed_log)
        if self.log_path is not None and self.log_path.exists():
            lines += self.log_path.read_text(errors="replace").splitlines()
        return lines


@dataclass
class LivyState:
    pool: str
    connection_string: str
    work_dir: Path
    batches: dict[int, Batch] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    bodies: list[dict[str, Any]] = field(default_factory=list)  # accepted POST bodies
    die_next_submit: bool = False
    reject_tokens: bool = False
    throttle_next: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def batches_path(self) -> str:
        return f"/livyApi/versions/{API_VERSION}/sparkPools/{self.pool}/batches"

    def wait_for_state(self, batch_id: int, states: set[str], timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = self.batches.get(batch_id)
            if batch is not None and batch.state in states:
                return batch.state
            time.sleep(0.1)
        raise TimeoutError(f"batch {batch_id} did not reach {states}")

    def stop_all(self) -> None:
        """Kill whatever still runs (test teardown)."""
        for batch in self.batches.values():
            if batch.process is not None and batch.process.poll() is None:
                _kill_group(batch.process)


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


class LivyHandler(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, *args: Any) -> None:
        pass

    @property
    def state(self) -> LivyState:
        return self.server.state

    def _reply(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _admit(self, method: str) -> tuple[str, dict[str, list[str]]] | None:
        """Common checks; returns the path below /batches and the query, or None if answered."""
        url = urllib.parse.urlsplit(self.path)
        with self.state.lock:
            self.state.requests.append((method, url.path))
            throttled = self.state.throttle_next > 0
            if throttled:
                self.state.throttle_next -= 1
        if throttled:
            self._reply(429, {"error": "TooManyRequests"}, {"Retry-After": "0"})
            return None
        expected = f"Bearer {token_for(SYNAPSE_RESOURCE)}"
        if self.state.reject_tokens or self.headers.get("Authorization") != expected:
            # What Synapse answers for a missing, expired or wrong-audience token.
            self._reply(
                401,
                {"code": "Unauthorized", "message": "Token Authentication failed - IDX10223"},
                {"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
            return None
        if not url.path.startswith(self.state.batches_path):
            self._reply(404, {"code": "NotFound", "message": f"no route {url.path}"})
            return None
        return url.path[len(self.state.batches_path) :], urllib.parse.parse_qs(url.query)

    def _batch(self, rest: str) -> Batch | None:
        match = re.fullmatch(r"/(\d+)(/log)?", rest)
        batch = self.state.batches.get(int(match.group(1))) if match else None
        if batch is None:
            self._reply(404, {"code": "NotFound", "message": f"batch {rest} not found"})
        return batch

    def do_POST(self) -> None:
        admitted = self._admit("POST")
        if admitted is None:
            return
        rest, _ = admitted
        if rest:
            self._reply(404, {"code": "NotFound", "message": rest})
            return
        length = int(self.headers.get("Content-Length", "0"))
        try:
            body = json.loads(self.rfile.read(length))
        except json.JSONDecodeError as error:
            self._reply(400, {"code": "BadRequest", "message": f"body is not JSON: {error}"})
            return
        problem = body_problem(body)
        if problem:
            self._reply(400, {"code": "BadRequest", "message": problem})
            return
        with self.state.lock:
            batch = Batch(id=len(self.state.batches), body=body)
            self.state.batches[batch.id] = batch
            self.state.bodies.append(body)
            die = self.state.die_next_submit
            self.state.die_next_submit = False
        if die:
            batch.state, batch.result = "dead", "Failed"
            batch.fixed_log = [
                "stdout: ",
                "stderr: ",
                "YARN Diagnostics: Could not allocate the requested cores: the pool is at its "
                "vCore quota.",
            ]
        else:
            threading.Thread(target=_run_batch, args=(self.state, batch), daemon=True).start()
        self._reply(200, describe(batch, self.state))

    def do_GET(self) -> None:
        admitted = self._admit("GET")
        if admitted is None:
            return
        rest, query = admitted
        if not rest:  # list batches
            start = int(query.get("from", ["0"])[0])
            size = int(query.get("size", ["20"])[0])
            listed = [describe(b, self.state) for b in self.state.batches.values()]
            self._reply(
                200, {"from": start, "total": len(listed), "sessions": listed[start : start + size]}
            )
            return
        batch = self._batch(rest)
        if batch is None:
            return
        if rest.endswith("/log"):
            lines = batch.log_lines()
            start = int(query.get("from", ["0"])[0])
            size = int(query.get("size", ["100"])[0])
            page = lines[start : start + size]
            self._reply(
                200,
                {
                    "id": batch.id,
                    "from": start,
                    "size": len(page),
                    "total": len(lines),
                    "log": page,
                },
            )
            return
        self._reply(200, describe(batch, self.state))

    def do_DELETE(self) -> None:
        admitted = self._admit("DELETE")
        if admitted is None:
            return
        rest, _ = admitted
        batch = self._batch(rest)
        if batch is None:
            return
        batch.cancelled = True
        if batch.process is not None and batch.process.poll() is None:
            _kill_group(batch.process)
        if batch.state not in ("success", "dead", "error"):
            batch.state, batch.result = "killed", "Cancelled"
        self._reply(200, {"msg": "deleted"})


def body_problem(body: Any) -> str | None:
    """What is wrong with a POST body, as Livy would say it, or None."""
    if not isinstance(body, dict):
        return "body must be a JSON object"
    unknown = sorted(set(body) - set(BODY_FIELDS))
    if unknown:
        return f"unknown field(s): {', '.join(unknown)}"
    for name in REQUIRED_FIELDS:
        if name not in body:
            return f"'{name}' is required"
    for name, kind in BODY_FIELDS.items():
        if name in body and (not isinstance(body[name], kind) or isinstance(body[name], bool)):
            return f"'{name}' must be {getattr(kind, '__name__', kind)}"
    for name in ("file", *body.get("pyFiles", [])):
        url = body["file"] if name == "file" else name
        if not isinstance(url, str) or not _ABFSS.match(url):
            return f"{url!r} is not an abfss:// URL the pool can read"
    if not body["file"].endswith(".py"):
        return "'file' must be a .py script for a PySpark batch"
    if not all(isinstance(a, str) for a in body.get("args", [])):
        return "'args' must be strings"
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in body.get("conf", {}).items()):
        return "'conf' must map strings to strings"
    for name in ("driverMemory", "executorMemory"):
        if name in body and not _MEMORY.match(body[name]):
            return f"'{name}' must look like 28g"
    return None


def describe(batch: Batch, state: LivyState) -> dict[str, Any]:
    """A batch as GET /batches/{id} shows it (the fields the pipeline and the portal read)."""
    return {
        "id": batch.id,
        "name": batch.body.get("name"),
        "sparkPoolName": state.pool,
        "jobType": "SparkBatch",
        "state": batch.state,
        "result": batch.result,
        "appId": f"application_fake_{batch.id:04d}" if batch.process is not None else None,
        "tags": batch.body.get("tags", {}),
        "log": batch.log_lines()[-10:],
    }


def _download(state: LivyState, url: str, folder: Path) -> Path:
    match = _ABFSS.match(url)
    assert match is not None
    service = BlobServiceClient.from_connection_string(state.connection_string)
    data = service.get_blob_client(match["container"], match["path"]).download_blob().readall()
    target = folder / match["path"].rsplit("/", 1)[-1]
    target.write_bytes(data)
    return target


def _run_batch(state: LivyState, batch: Batch) -> None:
    """What the pool does with an accepted batch, on this machine."""
    folder = state.work_dir / f"batch-{batch.id}"
    folder.mkdir(parents=True, exist_ok=True)
    batch.log_path = folder / "driver.log"
    batch.state = "starting"
    try:
        entry = _download(state, batch.body["file"], folder)
        py_files = [_download(state, url, folder) for url in batch.body.get("pyFiles", [])]
    except Exception as error:  # a missing file: the pool fails the batch the same way
        batch.fixed_log = [f"stderr: cannot fetch the batch's files: {error}"]
        batch.state, batch.result = "dead", "Failed"
        return
    submit_args = ["--master", "local[2]", "--driver-memory", "1g"]
    for key, value in batch.body.get("conf", {}).items():
        submit_args += ["--conf", f"{key}={value}"]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(str(p) for p in py_files),
        "PYSPARK_SUBMIT_ARGS": " ".join(submit_args) + " pyspark-shell",
        "PYSPARK_PYTHON": sys.executable,
        "AZURE_STORAGE_CONNECTION_STRING": state.connection_string,
        "PYTHONUNBUFFERED": "1",
    }
    if batch.cancelled:
        return
    with batch.log_path.open("wb") as log:
        batch.process = subprocess.Popen(
            [sys.executable, str(entry), *batch.body.get("args", [])],
            cwd=folder,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        batch.state = "running"
        code = batch.process.wait()
    if batch.cancelled:
        batch.state, batch.result = "killed", "Cancelled"
    elif code == 0:
        batch.state, batch.result = "success", "Succeeded"
    else:
        batch.state, batch.result = "dead", "Failed"


@contextmanager
def running_livy(
    ca: TestCA, pool: str, connection_string: str, work_dir: Path
) -> Iterator[tuple[str, LivyState]]:
    """Serve the fake; yields (endpoint, state). Kills leftover batches on the way out."""
    state = LivyState(pool=pool, connection_string=connection_string, work_dir=work_dir)
    try:
        with serve_https(ca, LivyHandler, state) as endpoint:
            yield endpoint, state
    finally:
        state.stop_all()
