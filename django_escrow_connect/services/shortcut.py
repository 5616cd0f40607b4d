"""A webhook handler's common case, as SQL that commits with the event's insert.

A new event whose handler would make exactly one conditional change (hold a
payment, find or record a charge, apply an account snapshot) costs one
statement after the duplicate check on PostgreSQL: the read of the event's
recorded state, the handler's change and the event's insert are ``WITH``
items of one autocommitted statement
(:mod:`..webhooks.shortcuts` builds it). The handler's change is guarded by
``condition`` (the event is not recorded yet), so a duplicate changes
nothing; the event is recorded ``processed`` only when :attr:`Shortcut.applied`
holds, otherwise ``received``, and then the handler runs as usual, with the
event row locked. So a shortcut never decides anything the handler would
decide differently: it either did the handler's whole work, or nothing.

Internal: built by the services' appliers; not part of the public API.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__: list[str] = []


@dataclass(frozen=True)
class Shortcut:
    """``WITH`` items (``name AS (...)``, comma-separated) and what to do after the commit."""

    ctes: str
    params: list[Any]
    #: SQL (no parameters): true when the ``WITH`` items did the handler's whole work.
    applied: str
    #: Joined to the statement's final ``SELECT`` (e.g. ``LEFT JOIN changed ON TRUE``).
    joins: str
    #: SQL expressions the final ``SELECT`` returns for :attr:`finish`.
    columns: list[str]
    #: Called after the commit, when applied, with the values of :attr:`columns`;
    #: returns what the handler's applier returns (the payment), for the log.
    finish: Callable[[tuple[Any, ...]], Any]
