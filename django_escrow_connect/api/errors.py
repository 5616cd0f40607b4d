"""One error shape for every API response: ``{"error": {"code", "message"}}``
(plus ``"fields"`` for validation errors).

Views raise :class:`~django_escrow_connect.services.errors.ServiceError` or
DRF exceptions; :class:`EscrowAPIView` turns both into this shape so hosts
need not change their global ``EXCEPTION_HANDLER``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.core.exceptions import (
    PermissionDenied,
    RequestDataTooBig,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.http import Http404, QueryDict
from django.utils.http import parse_header_parameters
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from rest_framework import exceptions, status
from rest_framework.exceptions import ErrorDetail
from rest_framework.parsers import BaseParser
from rest_framework.response import Response
from rest_framework.views import APIView

from ..services.errors import ServiceError

__all__ = [
    "EscrowAPIView",
    "error_response",
    "handle_exception",
]


def error_response(code: str, message: str, http_status: int, **extra: Any) -> Response:
    """The API's error body ``{"error": {"code", "message", ...}}`` with ``http_status``."""
    return Response({"error": {"code": code, "message": message, **extra}}, status=http_status)


def handle_exception(exc: Exception) -> Response | None:
    """Map a service or framework error to the API's error format (``None``: not ours)."""
    if isinstance(exc, ServiceError):
        return error_response(exc.code, exc.message, exc.status_code)
    if isinstance(exc, Http404):
        return error_response("not_found", _("Not found."), status.HTTP_404_NOT_FOUND)
    if isinstance(exc, PermissionDenied):
        return error_response("forbidden", _("Permission denied."), status.HTTP_403_FORBIDDEN)
    if isinstance(exc, exceptions.ValidationError):
        return error_response(
            "invalid",
            _("The request is not valid."),
            status.HTTP_400_BAD_REQUEST,
            fields=_encodable(exc.detail),
        )
    if isinstance(exc, exceptions.APIException):
        detail = exc.detail
        message = (
            _replace_surrogates(str(detail))
            if not isinstance(detail, (dict, list))
            else _("Request refused.")
        )
        response = error_response(
            getattr(detail, "code", None) or exc.default_code, message, exc.status_code
        )
        for header in ("WWW-Authenticate", "Retry-After"):
            value = getattr(exc, "auth_header", None) if header == "WWW-Authenticate" else None
            if value:
                response[header] = value
        wait = getattr(exc, "wait", None) if isinstance(exc, exceptions.Throttled) else None
        if wait is not None:
            response["Retry-After"] = str(int(wait))
        return response
    return None


def _replace_surrogates(text: str) -> str:
    return _SURROGATES.sub("\ufffd", text)


_SURROGATES = re.compile("[\ud800-\udfff]")


def _encodable(detail: Any) -> Any:
    """A validation error's detail with lone surrogates replaced by U+FFFD.

    JSON may carry a lone surrogate (``"\\ud800"``), which no UTF-8 text can
    hold. DRF's messages repeat what was sent (an unknown field's name, ``"x"
    is not a valid choice``), and rendering such a message as UTF-8 raised
    ``UnicodeEncodeError``: the 400 became a 500.
    """
    if isinstance(detail, dict):
        return {_replace_surrogates(str(k)): _encodable(v) for k, v in detail.items()}
    if isinstance(detail, list):
        return [_encodable(item) for item in detail]
    if isinstance(detail, ErrorDetail):
        return ErrorDetail(_replace_surrogates(str(detail)), code=detail.code)
    if isinstance(detail, str):
        return _replace_surrogates(detail)
    return detail


class RequestTooLarge(exceptions.APIException):
    """A request body larger than ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (413)."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "request_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(_("The request body is larger than %(limit)s bytes.") % {"limit": limit})


class _BoundedStream:
    """A request body read no further than ``limit`` bytes.

    Content-Length may be understated (an ASGI server hands Django the whole
    body, whatever the header said), so the bytes read are counted: one byte
    past the limit is a :class:`RequestTooLarge`, before the rest is read.
    """

    def __init__(self, stream: Any, limit: int) -> None:
        self.stream = stream
        self.limit = limit
        self.remaining = limit

    def read(self, size: int | None = -1) -> bytes:
        wanted = self.remaining + 1 if size is None or size < 0 else size
        chunk: bytes = self.stream.read(min(wanted, self.remaining + 1))
        self._count(chunk)
        return chunk

    def readline(self, size: int | None = -1) -> bytes:
        wanted = self.remaining + 1 if size is None or size < 0 else size
        line: bytes = self.stream.readline(min(wanted, self.remaining + 1))
        self._count(line)
        return line

    def _count(self, chunk: bytes) -> None:
        self.remaining -= len(chunk)
        if self.remaining < 0:
            raise RequestTooLarge(self.limit)


class LengthRequired(exceptions.APIException):
    """A request body sent without a Content-Length (411)."""

    status_code = status.HTTP_411_LENGTH_REQUIRED
    default_code = "length_required"
    default_detail = gettext_lazy("Send the request body with a Content-Length header.")


def _refuse_undeclared_body(request: Any) -> None:
    """Refuse a body that came without a Content-Length.

    DRF reads no body unless Content-Length is a positive number: under ASGI
    a chunked (or HTTP/2) request has its body and no Content-Length, and
    ``request.data`` was ``{}``: a refund of ``{"amount": 100}`` refunded
    everything. Under WSGI Django reads no body without Content-Length at
    all, but a chunked one is announced by ``Transfer-Encoding`` (gunicorn
    and uWSGI pass the header on). Under ASGI Django hands such a body over
    as a file; its size is looked up, nothing is read, so ``request.body``
    stays readable for the host.
    """
    if request.method not in ("POST", "PUT", "PATCH") or _declared_length(request.META) > 0:
        return
    if request.META.get("HTTP_TRANSFER_ENCODING"):
        raise LengthRequired()
    if _spooled_size(getattr(request._request, "_stream", None)) > 0:
        raise LengthRequired()


def _spooled_size(stream: Any) -> int:
    """The size of a body Django spooled to a file (ASGI), 0 for any other stream.

    Not ``seekable()``: Python 3.10's SpooledTemporaryFile has no such method
    (3.11 added it) although it seeks. WSGI's LimitedStream and the test
    client's payload cannot seek. The whole size, not what is left past the
    position: a body a host's middleware already read is dropped by DRF all
    the same.
    """
    try:
        position = stream.tell()
        size = stream.seek(0, os.SEEK_END)
        stream.seek(position)
    except (AttributeError, OSError, ValueError):
        return 0
    return size if isinstance(size, int) else 0


def _declared_length(meta: Any) -> int:
    """The request's Content-Length as DRF reads it (0: none, or not a number)."""
    try:
        return int(meta.get("CONTENT_LENGTH", meta.get("HTTP_CONTENT_LENGTH", 0)))
    except (ValueError, TypeError):
        return 0


class _GuardedParser(BaseParser):
    """One of the view's parsers, with a body past Django's limits refused,
    and a document nested too deeply as a 400, in the API's error shape.

    Django enforces ``DATA_UPLOAD_MAX_MEMORY_SIZE`` when ``request.body`` or
    ``request.POST`` is read, but DRF's parsers read the request's stream
    themselves: a JSON body of any size was read into memory and parsed. A
    declared ``Content-Length`` over the limit is refused before a byte is
    read, and the bytes read are counted (:class:`_BoundedStream`); ``None``
    means no limit, as for Django. The package's API takes no files, so the
    limit is the whole body's.

    ``json`` decodes nested arrays and objects by recursion: ``[[[...]]]``
    deeper than Python's recursion limit raises ``RecursionError``, which
    DRF's ``JSONParser`` does not turn into a ``ParseError`` (it catches
    ``ValueError`` only), so the request would end in a 500.

    A form body with more fields or files than ``DATA_UPLOAD_MAX_NUMBER_FIELDS``
    / ``DATA_UPLOAD_MAX_NUMBER_FILES`` raises a ``SuspiciousOperation`` that
    DRF leaves to Django: a 400, but Django's HTML page, not this API's
    ``{"error": ...}`` body.
    """

    def __init__(self, parser: BaseParser) -> None:
        self.parser = parser
        self.media_type = parser.media_type
        self.renderer_class = getattr(parser, "renderer_class", None)

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None:
            request = (parser_context or {}).get("request")
            if _declared_length(getattr(request, "META", {})) > limit:
                raise RequestTooLarge(limit)
            stream = _BoundedStream(stream, limit)
        stream = peek = _Peek(stream)
        try:
            parsed = self.parser.parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError(_("The request body is nested too deeply.")) from None
        except RequestDataTooBig:
            # Django's multipart parser, counting the form's fields.
            raise RequestTooLarge(limit or 0) from None
        except (TooManyFieldsSent, TooManyFilesSent):
            raise exceptions.ParseError(
                _("The request body has too many fields or files.")
            ) from None
        if _no_fields(parsed) and not peek.an_empty_form(media_type):
            # A form body with content yet no field is not "no fields": read
            # as {}, a release would release everything held.
            raise exceptions.ParseError(_("The request body has no fields."))
        return parsed


class _Peek:
    """A request body, its first bytes kept to tell an empty form from garbage."""

    KEPT = 1024

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.head = b""
        self.size = 0

    def read(self, size: int | None = -1) -> bytes:
        return self._keep(self.stream.read(size))

    def readline(self, size: int | None = -1) -> bytes:
        return self._keep(self.stream.readline(size))

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")

    def _keep(self, chunk: bytes) -> bytes:
        if len(self.head) < self.KEPT:
            self.head += chunk[: self.KEPT - len(self.head)]
        self.size += len(chunk)
        return chunk

    def an_empty_form(self, media_type: Any) -> bool:
        """Whether the body holds nothing but a form's separators.

        Django's test client and a browser's empty ``FormData`` send a
        multipart body of only its closing boundary; an urlencoded one may be
        stray ``&``. Such a body is an empty form, as an empty body is.
        """
        if self.size > len(self.head):
            return False
        rest = self.head
        boundary = _boundary(media_type)
        if boundary:
            rest = rest.replace(b"--" + boundary, b"")
        return not rest.replace(b"&", b"").replace(b"--", b"").strip()


def _boundary(media_type: Any) -> bytes:
    """The ``boundary`` of a multipart content type, or b"", read as Django's
    multipart parser reads it."""
    try:
        content_type, params = parse_header_parameters(str(media_type or ""))
    except ValueError:
        return b""
    if not content_type.startswith("multipart/"):
        return b""
    return str(params.get("boundary", "")).encode("latin-1", "replace")


def _no_fields(parsed: Any) -> bool:
    """Whether a form parser's result (a QueryDict, or multipart's data and files) is empty."""
    if isinstance(parsed, QueryDict):
        return not parsed
    data, files = getattr(parsed, "data", None), getattr(parsed, "files", None)
    return isinstance(data, QueryDict) and not data and not files


class EscrowAPIView(APIView):
    """Base of every API view in the package: the error shape above."""

    def get_parsers(self) -> list[BaseParser]:
        # The parsers the host configured (DEFAULT_PARSER_CLASSES, or the
        # view's parser_classes), each guarded: the host's settings stay as
        # they are.
        return [_GuardedParser(parser) for parser in super().get_parsers()]

    def initial(self, request: Any, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        _refuse_undeclared_body(request)

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
            # Keep DRF's 401-vs-403 decision (WWW-Authenticate header).
            auth_header = self.get_authenticate_header(self.request)
            if auth_header:
                setattr(exc, "auth_header", auth_header)  # noqa: B010 - DRF reads it back
            else:
                exc.status_code = status.HTTP_403_FORBIDDEN
        response = handle_exception(exc)
        if response is None:
            return super().handle_exception(exc)
        response.exception = True
        return response
