"""OpenAPI support that works with or without drf-spectacular.

drf-spectacular is an optional extra (``pip install django-escrow-connect[openapi]``).
Views import :func:`extend_schema`, :class:`OpenApiParameter` and
:class:`OpenApiResponse` from here: with drf-spectacular installed they are the
real ones; without it they are no-ops, so the package imports and runs the same.

Views also set ``schema = view_schema()``: drf-spectacular's ``AutoSchema`` when
it is installed, so the package's views document themselves even when the
host's ``DEFAULT_SCHEMA_CLASS`` is DRF's default.

:data:`urlpatterns` holds the package's own schema endpoint (``openapi/``,
name ``openapi-schema``): the OpenAPI document of this package's endpoints
only, served only when drf-spectacular is installed. Hosts that want one
document for their whole API add drf-spectacular's ``SpectacularAPIView`` to
their own URLconf instead (see docs/onboarding.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.urls import path

from .. import __version__

F = TypeVar("F", bound=Callable[..., Any])

try:  # pragma: no branch - which branch runs depends on the environment
    from drf_spectacular.openapi import AutoSchema as _AutoSchema
    from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
    from drf_spectacular.utils import extend_schema as _extend_schema
    from drf_spectacular.views import SpectacularAPIView

    SPECTACULAR_AVAILABLE = True

    def extend_schema(*args: Any, **kwargs: Any) -> Callable[[F], F]:
        """drf-spectacular's decorator, based on its own ``AutoSchema``.

        By default the decorator extends the host's ``DEFAULT_SCHEMA_CLASS``,
        which is DRF's own schema class unless the host configured
        drf-spectacular; the package's views must not depend on that.
        """
        decorate = _extend_schema(*args, **kwargs)

        def decorator(func: F) -> F:
            if getattr(func, "schema", None) is None:
                func.schema = _AutoSchema  # type: ignore[attr-defined]
            return decorate(func)

        return decorator

except ImportError:  # drf-spectacular is optional
    SPECTACULAR_AVAILABLE = False
    _AutoSchema = None  # type: ignore[misc, assignment]
    SpectacularAPIView = None  # type: ignore[misc, assignment]

    def extend_schema(*args: Any, **kwargs: Any) -> Callable[[F], F]:  # type: ignore[no-redef, unused-ignore]
        """No-op stand-in for drf-spectacular's decorator."""

        def decorator(func: F) -> F:
            return func

        return decorator

    class OpenApiParameter:  # type: ignore[no-redef]
        """Stand-in: keeps the arguments, documents nothing."""

        QUERY = "query"
        PATH = "path"
        HEADER = "header"
        COOKIE = "cookie"

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.args = args
            self.kwargs = kwargs

    class OpenApiResponse:  # type: ignore[no-redef]
        """Stand-in: keeps the arguments, documents nothing."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.args = args
            self.kwargs = kwargs


__all__ = [
    "SPECTACULAR_AVAILABLE",
    "OpenApiParameter",
    "OpenApiResponse",
    "extend_schema",
    "only_package_endpoints",
    "urlpatterns",
    "view_schema",
]

PACKAGE = "django_escrow_connect"


def view_schema() -> Any:
    """The ``schema`` attribute for the package's API views."""
    if _AutoSchema is not None:
        return _AutoSchema()
    from rest_framework.schemas import DefaultSchema

    return DefaultSchema()


def only_package_endpoints(endpoints: list[Any], **kwargs: Any) -> list[Any]:
    """drf-spectacular preprocessing hook: keep this package's endpoints only."""
    kept = []
    for endpoint in endpoints:
        callback = endpoint[3]
        view_class = getattr(callback, "cls", None)
        module = getattr(view_class, "__module__", "") or ""
        if module == PACKAGE or module.startswith(PACKAGE + "."):
            kept.append(endpoint)
    return kept


def _schema_view() -> Any:
    class PackageSchemaView(SpectacularAPIView):  # type: ignore[misc, valid-type, unused-ignore]
        # The document itself is not an endpoint of any document.
        schema = None

    return PackageSchemaView.as_view(
        custom_settings={
            "TITLE": "django-escrow-connect",
            "DESCRIPTION": "Escrow payments on Stripe Connect: onboarding, payments, webhooks.",
            "VERSION": __version__,
            "PREPROCESSING_HOOKS": [f"{__name__}.only_package_endpoints"],
            # Several models have a "status" field: name their enums.
            "ENUM_NAME_OVERRIDES": {
                "AccountStatusEnum": "django_escrow_connect.states.AccountStatus",
                "PaymentStatusEnum": "django_escrow_connect.states.PaymentStatus",
                "BusinessTypeEnum": "django_escrow_connect.states.BusinessType",
            },
        }
    )


urlpatterns: list[Any] = (
    [path("openapi/", _schema_view(), name="openapi-schema")] if SPECTACULAR_AVAILABLE else []
)
