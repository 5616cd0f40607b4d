"""What the state machines declare, read through django-fsm's public API.

The ``@transition`` declarations in :mod:`django_escrow_connect.base.models`
are the one place that says from which states a transition leads where, and
who may ask for it. Services ask them instead of keeping lists of their own:

* whether the state allows a transition: :func:`django_fsm.can_proceed`;
* whether a user may ask for it: :func:`may` (the transition's
  ``permission=``);
* the states a transition leaves from, when a query needs them as a list
  (``filter(status__in=...)``): :func:`sources`.

Only requests made on a user's behalf ask :func:`may`. Stripe's answers,
webhooks, ``escrow_reconcile`` and the scheduled commands are the system: they
apply transitions without a user and skip the permission.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

from django_fsm import FSMFieldMixin, Transition

__all__ = ["declared", "may", "permission_of", "sources", "targets"]


def declared(model: Any, name: str) -> list[Transition]:
    """Every ``(source, target)`` pair the transition method ``name`` declares.

    One :class:`django_fsm.Transition` per source state, in declaration order;
    :class:`LookupError` when ``model`` has no such transition.
    """
    model = model if isinstance(model, type) else type(model)
    return list(_declared(model, name))


@functools.cache
def _declared(model: type, name: str) -> tuple[Transition, ...]:
    # The declarations are made when the class is created and never change:
    # read them once per model (the webhook hot path asks on every event).
    found = tuple(transition for transition in _all(model) if transition.name == name)
    if not found:
        raise LookupError(f"{model.__name__} declares no transition {name!r}")
    return found


def sources(model: Any, name: str) -> frozenset[str]:
    """The states transition ``name`` leaves from."""
    return _sources(model if isinstance(model, type) else type(model), name)


@functools.cache
def _sources(model: type, name: str) -> frozenset[str]:
    return frozenset(str(transition.source) for transition in _declared(model, name))


def targets(model: Any, name: str) -> frozenset[str]:
    """The states transition ``name`` can lead to (every one a ``RETURN_VALUE`` allows)."""
    return _targets(model if isinstance(model, type) else type(model), name)


@functools.cache
def _targets(model: type, name: str) -> frozenset[str]:
    found: set[str] = set()
    for transition in _declared(model, name):
        target = transition.target
        allowed = getattr(target, "allowed_states", None)
        found.update(str(state) for state in (allowed if allowed else (target,)))
    return frozenset(found)


def permission_of(model: Any, name: str) -> Callable[[Any, Any], bool] | None:
    """The ``permission=`` callable of transition ``name`` (None: no user asks for it).

    A transition declares one permission for all its sources: who may ask is
    the same question in every state (the callable itself may look at the
    state, as :func:`~django_escrow_connect.permissions.may_cancel` does).
    """
    permissions = {transition.permission for transition in declared(model, name)}
    if len(permissions) != 1:
        raise LookupError(f"{name!r} declares different permissions for different sources")
    (permission,) = permissions
    if permission is not None and not callable(permission):
        # A permission string would be a Django model permission: nothing in
        # the package grants those, so none is declared.
        raise TypeError(f"{name!r}: permission= must be a callable (payment, user)")
    return permission


def may(bound_method: Any, user: Any) -> bool:
    """Whether ``user`` may ask for the transition ``bound_method``, whatever the state.

    :func:`django_fsm.has_transition_perm` is this *and* :func:`can_proceed`
    in one answer. Services ask the two apart, permission first, so that a
    user who may not ask is told so (403) whatever the state, and a user who
    may is told when the state does not allow it (409).
    """
    instance = bound_method.__self__
    permission = permission_of(instance, bound_method.__name__)
    return permission is None or bool(permission(instance, user))


def _all(model: Any) -> Iterator[Transition]:
    for field in model._meta.get_fields():
        if isinstance(field, FSMFieldMixin):
            yield from field.get_all_transitions(model)
