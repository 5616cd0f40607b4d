"""Argument checks shared by every gateway (Stripe's own rules, without ``stripe``).

A gateway refuses a bad argument with ``ValueError``/``TypeError`` before any
request, so a caller's bug never reaches Stripe (or the simulation) as a
half-formed call. This module must not import ``stripe``.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "MAX_IDEMPOTENCY_KEY_LENGTH",
    "require_amount",
    "require_capabilities",
    "require_collection",
    "require_id",
    "require_idempotency_key",
    "require_service_agreement",
    "require_session_components",
]

#: Stripe's limit on the length of an ``Idempotency-Key``.
MAX_IDEMPOTENCY_KEY_LENGTH = 255


def require_idempotency_key(key: str) -> str:
    """``key`` if it is a usable caller-supplied idempotency key."""
    if not isinstance(key, str) or not key.strip():
        raise ValueError("idempotency_key must be a non-empty string supplied by the caller")
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise ValueError(f"idempotency_key is longer than {MAX_IDEMPOTENCY_KEY_LENGTH} characters")
    return key


def require_id(value: str, name: str) -> str:
    """``value`` if it is a non-empty Stripe id."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty Stripe id")
    return value


def require_amount(value: int, name: str, *, allow_zero: bool = False) -> None:
    """Refuse anything but a positive (or, if allowed, zero) int in minor units."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int in the currency's minor unit, not {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else 'positive'}, not {value}")


def require_capabilities(names: object) -> tuple[str, ...]:
    """The capability names to request, in order, duplicates dropped (at least one)."""
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise TypeError("capabilities must be a list or tuple of capability names")
    unique: list[str] = []
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError("capabilities must hold non-empty capability names")
        if name not in unique:
            unique.append(name)
    if not unique:
        raise ValueError("capabilities must name at least one capability")
    return tuple(unique)


def require_service_agreement(value: object) -> None:
    """Refuse anything but ``"full"``, ``"recipient"`` or None (Stripe's default, full)."""
    if value not in (None, "full", "recipient"):
        raise ValueError("service_agreement must be 'full', 'recipient' or None")


def require_collection(collect: object, future_requirements: object) -> None:
    """Refuse account-link ``collection_options`` values Stripe does not know."""
    if collect not in ("currently_due", "eventually_due"):
        raise ValueError(f"collect must be 'currently_due' or 'eventually_due', not {collect!r}")
    if future_requirements not in ("include", "omit"):
        raise ValueError(
            f"future_requirements must be 'include' or 'omit', not {future_requirements!r}"
        )


def require_session_components(components: object) -> dict[str, dict[str, bool]]:
    """An AccountSession's components as ``{name: {feature: bool}}``, in the given order.

    ``components`` is a sequence of names (no features: Stripe's defaults) or a
    mapping of names to features. Whether Stripe knows a name or feature is
    Stripe's to answer; this refuses only what cannot be sent.
    """
    if isinstance(components, str):
        raise TypeError("components must be a sequence of component names, not a string")
    if isinstance(components, Mapping):
        items = list(components.items())
    elif isinstance(components, (list, tuple)):
        items = [(name, {}) for name in components]
    else:
        raise TypeError("components must be a list of names or a mapping of names to features")
    if not items:
        raise ValueError("components must name at least one embedded component")
    result: dict[str, dict[str, bool]] = {}
    for name, features in items:
        if not isinstance(name, str) or not name:
            raise ValueError("components must hold non-empty component names")
        if not isinstance(features, Mapping) or any(
            not isinstance(key, str) or not isinstance(value, bool)
            for key, value in features.items()
        ):
            raise TypeError(f"the features of component {name!r} must map names to True/False")
        result[name] = dict(features)
    return result
