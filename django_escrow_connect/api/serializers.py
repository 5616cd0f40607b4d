"""Serializers both API modules share: strict input, amounts, dates, the error shape."""

from __future__ import annotations

import re
from typing import Any

from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from ..money import MAX_MINOR_AMOUNT
from ..services import errors
from .schema import OpenApiParameter, OpenApiResponse

__all__ = [
    "IDEMPOTENCY_KEY_PARAMETER",
    "ErrorDetailSerializer",
    "ErrorSerializer",
    "IsoDateTimeField",
    "MinorAmountField",
    "NullIfBlankCharField",
    "StrictSerializer",
    "error_responses",
    "idempotency_key",
    "validated",
]


class MinorAmountField(serializers.IntegerField):
    """An amount in minor units: a JSON integer (or a string of digits), never a float."""

    default_error_messages = {
        "invalid": _("An amount is an integer in the currency's minor unit (cents)."),
        "min_value": _("The amount must be positive."),
    }

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool):
            self.fail("invalid")
        if isinstance(data, str) and data.isascii() and data.isdigit():
            # Leading zeros aside, more digits than the largest amount (a
            # BigIntegerField's) is not an amount; the bound keeps int() below
            # Python's 4300-digit conversion limit (a ValueError, a 500).
            stripped = data.lstrip("0")
            if len(stripped) > len(str(MAX_MINOR_AMOUNT)):
                self.fail("invalid")
            data = int(stripped or "0")
        if not isinstance(data, int):
            self.fail("invalid")
        if data <= 0:
            self.fail("min_value")
        return data


class IsoDateTimeField(serializers.DateTimeField):
    """``datetime.isoformat()`` as stored (UTC as ``+00:00``), not DRF's ``Z`` form.

    The API has always answered ``isoformat()``; clients compare the strings.
    """

    def to_representation(self, value: Any) -> Any:
        return value.isoformat() if value is not None else None


class NullIfBlankCharField(serializers.CharField):
    """A text column where blank means "none yet": answered as ``null``."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_null", True)
        super().__init__(**kwargs)

    def to_representation(self, value: Any) -> Any:
        return str(value) if value else None


class StrictSerializer(serializers.Serializer[Any]):
    """Refuses fields it does not declare: nothing a client sends is silently
    ignored (``currency`` or ``payee`` in a create request is an error, and so is
    a typo in a query parameter)."""

    def to_internal_value(self, data: Any) -> Any:
        if not hasattr(data, "keys"):
            raise _not_an_object()
        unknown = sorted(set(data.keys()) - set(self.fields))
        if unknown:
            raise serializers.ValidationError(
                {name: [_("This field is not accepted.")] for name in unknown}, code="unknown_field"
            )
        return super().to_internal_value(data)


def _not_an_object() -> serializers.ValidationError:
    return serializers.ValidationError(
        {"non_field_errors": [_("Send a JSON object.")]}, code="invalid"
    )


def validated(serializer_class: type[serializers.Serializer[Any]], data: Any) -> dict[str, Any]:
    """``data`` (a request body or query) checked by ``serializer_class``; 400 otherwise.

    An empty body is DRF's ``{}``; ``None`` is a JSON ``null`` body, which is
    not an object and is refused as ``[]`` or ``5`` are, not read as no fields.
    """
    if data is None:
        raise _not_an_object()
    if hasattr(data, "dict") and not isinstance(data, dict):
        data = data.dict()  # a QueryDict: a form body, an empty body or a query string
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


#: 1-255 printable ASCII characters, as Stripe's own keys.
_IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]{1,255}")

#: The OpenAPI description of the header, on the endpoints that take it.
IDEMPOTENCY_KEY_PARAMETER = OpenApiParameter(
    "Idempotency-Key",
    str,
    location=OpenApiParameter.HEADER,
    required=False,
    description=(
        "Optional, 1-255 printable ASCII characters (a new UUID per user action). "
        "Sent again with the same request, it never repeats it: the first answer is "
        "given again. See docs/payments.md, Retrying a request safely."
    ),
)


def idempotency_key(request: Any) -> str:
    """The request's ``Idempotency-Key`` header: ``""`` when absent, else 1-255
    printable ASCII characters (400 ``invalid_idempotency_key``, nothing done).

    The key is the client's and opaque: it is never logged or sent to Stripe.
    """
    raw = request.headers.get("Idempotency-Key")
    if raw is None:
        return ""
    if not isinstance(raw, str) or not _IDEMPOTENCY_KEY.fullmatch(raw):
        raise errors.InvalidInput(
            gettext("The Idempotency-Key header must be 1 to 255 printable ASCII characters."),
            code="invalid_idempotency_key",
        )
    return raw


class ErrorDetailSerializer(serializers.Serializer[Any]):
    code = serializers.CharField()
    message = serializers.CharField()
    # DRF's metaclass moves declared fields out of the class body, so this
    # does not shadow Serializer.fields at runtime; the stubs cannot know.
    fields = serializers.DictField(required=False)  # type: ignore[assignment]


class ErrorSerializer(serializers.Serializer[Any]):
    """Every error the API answers: ``{"error": {"code", "message", "fields"?}}``."""

    error = ErrorDetailSerializer()


def error_responses(descriptions: dict[int, str], *statuses: int) -> dict[int, Any]:
    """The OpenAPI responses for ``statuses``, all in the one error shape."""
    return {
        code: OpenApiResponse(response=ErrorSerializer, description=descriptions[code])
        for code in statuses
    }
