"""The crash suite's jobs: a management command run as a real process, killed mid-call.

The scheduled commands that move money (``escrow_auto_release``,
``escrow_capture_expiry``; ``escrow_reconcile`` is a follow-up, run in the
test process) run here as ``python -m django <command>`` in a process of
their own, on the test database, with the servers' settings
(``tests/crash/settings.py``, the shared simulated Stripe) and role ``job``:
like a server's worker, a job takes the crash plan, so its money call blocks
before or after Stripe acted (:class:`~.gateway.CrashGateway`) until the
test kills it with SIGKILL (:meth:`Jobs.crash`), as cron's host dying, the
OOM killer or a deploy would.

Every run (killed or not) is one line of the world's steps, with its exit
status and output, for the report of a failing case.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .harness import DEATH_TIMEOUT, MARKER_TIMEOUT, World
from .server import PROJECT, wait_gone

#: A job that neither finishes nor blocks within this is a failure of its own.
JOB_TIMEOUT = 60.0


@dataclass
class JobRun:
    """One run of a command: its exit status (``-9``: killed) and what it printed."""

    command: str
    returncode: int
    stdout: str
    stderr: str

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL

    @property
    def lines(self) -> list[str]:
        return [line for line in (self.stdout + self.stderr).splitlines() if line.strip()]

    def __str__(self) -> str:
        status = "killed (SIGKILL)" if self.killed else f"exit {self.returncode}"
        text = " | ".join(self.lines[-12:]) or "(nothing printed)"
        return f"{self.command}: {status}: {text}"


class Jobs:
    """Runs management commands as processes on the test database.

    ``env``: what the gunicorn servers get (the crash directory, the test
    database's name, the base settings); ``settings``: entries of
    ``ESCROW_CONNECT`` the job's own settings add (``AUTO_RELEASE_AFTER_DAYS``...).
    """

    def __init__(self, env: dict[str, str], directory: Path, settings: dict[str, Any]) -> None:
        self.env = env
        self.directory = directory
        self.settings = settings

    def environment(self) -> dict[str, str]:
        return {
            **os.environ,
            **self.env,
            "DJANGO_SETTINGS_MODULE": "tests.crash.settings",
            "ESCROW_CRASH_ROLE": "job",
            "ESCROW_CRASH_SETTINGS": json.dumps(self.settings),
            "PYTHONPATH": str(PROJECT),
            "PYTHONUNBUFFERED": "1",
        }

    def _start(self, command: str, args: tuple[str, ...]) -> tuple[subprocess.Popen[bytes], Any]:
        out = (self.directory / "job.out").open("w+b")
        process = subprocess.Popen(
            # The system checks ran at the servers' start already: skipped here
            # (a second or so of every run), as a cron entry may too.
            [sys.executable, "-m", "django", command, *args, "--skip-checks"],
            cwd=PROJECT,
            env=self.environment(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return process, out

    @staticmethod
    def _finish(command: str, args: tuple[str, ...], process: Any, out: Any) -> JobRun:
        out.seek(0)
        text = out.read().decode(errors="replace")
        out.close()
        # One stream (stdout and stderr interleaved as printed): the order of the
        # lines is the order of the changes.
        return JobRun(" ".join([command, *args]), process.returncode, text, "")

    def run(self, world: World, command: str, *args: str) -> JobRun:
        """Run ``command`` to its end (no crash plan is waiting)."""
        process, out = self._start(command, args)
        return self._wait(world, command, args, process, out)

    def _wait(
        self, world: World, command: str, args: tuple[str, ...], process: Any, out: Any
    ) -> JobRun:
        """The run once it ended (killed after ``JOB_TIMEOUT``), in the case's steps."""
        try:
            process.wait(timeout=JOB_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        run = self._finish(command, args, process, out)
        world.steps.append(f"job {run}")
        return run

    def crash(
        self, world: World, method: str, when: str, command: str, *args: str, skip: int = 0
    ) -> JobRun:
        """Run ``command``; SIGKILL it while it waits at ``method`` (``when`` Stripe acted)."""
        world.case_start = len(world.answers)
        world.shared.write_plan(method, when, skip=skip)
        process, out = self._start(command, args)
        try:
            marker = world.shared.wait_for_marker(MARKER_TIMEOUT)
        except TimeoutError:
            world.shared.clear_plan()
            self._wait(world, command, args, process, out)
            raise AssertionError(
                f"{method} never blocked ({when}): the job did not reach the call\n"
                + world.report()
            ) from None
        assert marker["pid"] == process.pid, f"blocked: {marker}, the job is {process.pid}"
        os.kill(process.pid, signal.SIGKILL)
        wait_gone(process.pid, DEATH_TIMEOUT)
        process.wait(timeout=DEATH_TIMEOUT)
        run = self._finish(command, args, process, out)
        world.steps.append(f"{method}: job killed {when} Stripe acted: {run}")
        assert run.killed, run
        return run
