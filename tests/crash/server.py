"""A real server process for the crash suite: gunicorn, one sync worker.

:class:`Server` starts ``gunicorn --workers 1 --preload tests.crash.wsgi`` on a
free loopback port, in its own process group, logging to a file. When the
test kills the worker (SIGKILL), the gunicorn master forks a new one from the
preloaded application, so the next request reaches a *restarted* server on
the same port. With ``timeout=2`` gunicorn itself kills a worker whose
request takes longer (the "slow Stripe" case).

:class:`HttpClient` talks to it with HTTP basic authentication (the
factories' password) and records every answer.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_gone(pid: int) -> bool:
    """True when ``pid`` has exited (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


def wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process_gone(pid):
            return
        time.sleep(0.02)
    raise TimeoutError(f"process {pid} still alive after {timeout}s")


@dataclass
class Answer:
    """One HTTP exchange: ``status`` None when the connection died without an answer."""

    label: str
    status: int | None
    body: Any = None
    error: str = ""
    #: gunicorn's own 500 for a worker it killed on timeout (not the application's)
    worker_timeout: bool = False

    def __str__(self) -> str:
        if self.status is None:
            return f"{self.label}: no answer ({self.error})"
        if self.worker_timeout:
            return f"{self.label}: {self.status} from gunicorn (worker timeout)"
        text = json.dumps(self.body) if not isinstance(self.body, str) else self.body
        if text.lstrip().lower().startswith("<!doctype"):
            text = "(an HTML error page: see the server log)"
        text = " ".join(text.split())
        return f"{self.label}: {self.status} {text[:300]}{' ' + self.error if self.error else ''}"


@dataclass
class Server:
    """``gunicorn`` serving ``tests.crash.wsgi`` with the given environment."""

    name: str
    env: dict[str, str]
    log_path: Path
    timeout: int = 30
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    case_offset: int = 0
    _log: Any = field(default=None, repr=False)

    def start(self, ready_timeout: float = 30.0) -> Server:
        self.port = free_port()
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        command = [
            sys.executable, "-m", "gunicorn",
            "--bind", f"127.0.0.1:{self.port}",
            "--workers", "1",
            "--worker-class", "sync",
            "--timeout", str(self.timeout),
            "--graceful-timeout", "1",
            "--preload",
            "--log-level", "warning",
            "tests.crash.wsgi:application",
        ]  # fmt: skip
        env = {
            **os.environ,
            **self.env,
            "DJANGO_SETTINGS_MODULE": "tests.crash.settings",
            "ESCROW_CRASH_ROLE": "server",
            "PYTHONPATH": str(PROJECT),
            "PYTHONUNBUFFERED": "1",
        }
        self.process = subprocess.Popen(
            command,
            cwd=PROJECT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            start_new_session=True,
        )
        self.wait_ready(ready_timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the server answers (any HTTP status) on its port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"server {self.name} exited ({self.process.returncode}):\n{self.log_tail()}"
                )
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/escrow/payments/")
                conn.getresponse().read()
                conn.close()
                return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"server {self.name} not ready after {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Terminate the whole process group (master and worker); bounded."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        if process is not None:
            # A worker left behind by a dead master: its group is ours.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` of what the server logged since :meth:`start_case`."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self.case_offset)
                text = log.read().decode(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(nothing logged)"

    def start_case(self, text: str) -> None:
        """Mark the log: :meth:`log_tail` shows only what follows."""
        with open(self.log_path, "a") as log:
            self.case_offset = log.tell()
            log.write(f"===== {text} =====\n")

    def mark_log(self, text: str) -> None:
        with open(self.log_path, "a") as log:
            log.write(f"===== {text} =====\n")


class HttpClient:
    """Requests to a :class:`Server`, as users identified by basic auth."""

    def __init__(self, server: Server, answers: list[Answer]) -> None:
        self.server = server
        self.answers = answers

    def request(
        self,
        method: str,
        path: str,
        *,
        user: Any = None,
        data: Any = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        label: str = "",
        timeout: float = 30.0,
    ) -> Answer:
        headers = dict(headers or {})
        if user is not None:
            token = base64.b64encode(f"{user.get_username()}:pw".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        if data is not None:
            body = json.dumps(data).encode()
            headers["Content-Type"] = "application/json"
        label = label or f"{method} {path} ({self.server.name})"
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            answer = Answer(label, None, error=f"{type(exc).__name__}: {exc}")
        else:
            try:
                parsed: Any = json.loads(raw) if raw else None
            except ValueError:
                parsed = raw.decode(errors="replace")
            answer = Answer(label, response.status, parsed)
        finally:
            conn.close()
        self.answers.append(answer)
        return answer
