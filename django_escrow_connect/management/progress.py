"""What a scheduled command prints as it goes, and where an error stopped it.

``escrow_auto_release``, ``escrow_capture_expiry`` and ``escrow_reconcile``
commit each payment's change on its own, ``escrow_fetch_missed_events`` each
event it records, ``escrow_requeue_stuck_events`` each event it enqueues.
They printed their lines once the run was over: when a later one raised (a
bug, the database or the broker gone), the earlier changes were made and
the cron log showed only the traceback, so an operator could release,
capture or void those payments by hand again, or not know which events
were recorded or enqueued.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.core.management.base import BaseCommand

from ..services.changes import Change, changed

__all__ = ["Progress"]


class Progress:
    """Prints each change as the run reports it (a failure on stderr).

    Pass it as the service's ``report``, and run the service within
    :meth:`until_stopped`.
    """

    def __init__(
        self,
        command: BaseCommand,
        made: str,
        counted: Callable[[list[Change]], int] = changed,
    ) -> None:
        #: What a change of state is, in the stop line: ``released``, ``changed``.
        self.made = made
        #: How many of the changes the stop line counts (default: those
        #: that changed a state; ``len``: every one, as an event recorded
        #: whose processing failed, or one enqueued again, which changes none).
        self.counted = counted
        self.command = command
        self.done: list[Change] = []

    def __call__(self, change: Change) -> None:
        self.done.append(change)
        (self.command.stderr if change.error else self.command.stdout).write(str(change))

    @contextmanager
    def until_stopped(self) -> Iterator[None]:
        """Before the traceback of an error that stops the run, say how far it got."""
        try:
            yield
        except Exception:
            self.command.stderr.write(
                f"Stopped by the error below after {self.counted(self.done)} {self.made}; "
                "the lines above are done."
            )
            raise
