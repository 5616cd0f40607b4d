"""Check a cassette against stripe-python's typings for the pinned API version.

stripe-python 16 is generated from Stripe's OpenAPI spec for API version
``2026-10-28.endive``: every resource class (``stripe.PaymentIntent``,
``stripe.Account.Requirements``, ...) declares its fields as annotations, and
every request's parameters are a ``TypedDict`` in ``stripe.params``. A
hand-authored cassette that names a field those typings do not know, gives a
field a value of the wrong type, or calls an object by the wrong ``object``
name describes a response Stripe cannot send at this version; a request
parameter the params ``TypedDict`` does not declare is one Stripe would
refuse. :func:`response_problems` and :func:`request_problems` list such
faults (empty when the body fits); ``tests/gateway/test_cassette_shapes.py``
runs them over every cassette.

The check is structural: field names, JSON types, ``Literal`` values where
the typing is a closed set, and the ``object`` of nested and expanded
objects. It does not know which fields a given response must contain.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
import types
import typing
from typing import Any, ForwardRef, Literal, Union
from urllib.parse import parse_qsl

import stripe
import typing_extensions
from stripe._object_classes import OBJECT_CLASSES, V2_OBJECT_CLASSES
from stripe._stripe_object import StripeObject, UntypedStripeObject
from stripe.events._event_classes import get_v2_event_class

__all__ = [
    "PARAMS_BY_ROUTE",
    "form_tree",
    "params_class",
    "request_problems",
    "resource_class",
    "response_problems",
]

Problems = list[str]

#: ``(method, path pattern)`` -> name of the ``stripe.params`` TypedDict of
#: that call. A cassette request on a route missing here is itself a problem:
#: add the route when the gateway learns a new call.
PARAMS_BY_ROUTE: dict[tuple[str, str], str] = {
    ("POST", r"/v1/accounts"): "AccountCreateParams",
    ("GET", r"/v1/accounts"): "AccountListParams",
    ("GET", r"/v1/accounts/acct_\w+"): "AccountRetrieveParams",
    ("POST", r"/v1/accounts/acct_\w+/login_links"): "AccountLoginLinkCreateParams",
    ("POST", r"/v1/account_links"): "AccountLinkCreateParams",
    ("POST", r"/v1/account_sessions"): "AccountSessionCreateParams",
    ("POST", r"/v1/payment_intents"): "PaymentIntentCreateParams",
    ("GET", r"/v1/payment_intents"): "PaymentIntentListParams",
    ("GET", r"/v1/payment_intents/pi_\w+"): "PaymentIntentRetrieveParams",
    ("POST", r"/v1/payment_intents/pi_\w+/capture"): "PaymentIntentCaptureParams",
    ("POST", r"/v1/payment_intents/pi_\w+/cancel"): "PaymentIntentCancelParams",
    ("POST", r"/v1/customers"): "CustomerCreateParams",
    ("POST", r"/v1/payment_methods/pm_\w+/detach"): "PaymentMethodDetachParams",
    ("GET", r"/v1/charges/(ch|py)_\w+"): "ChargeRetrieveParams",
    ("GET", r"/v1/disputes/(dp|du)_\w+"): "DisputeRetrieveParams",
    ("POST", r"/v1/transfers"): "TransferCreateParams",
    ("GET", r"/v1/transfers"): "TransferListParams",
    ("GET", r"/v1/transfers/tr_\w+"): "TransferRetrieveParams",
    ("POST", r"/v1/transfers/tr_\w+/reversals"): "TransferReversalCreateParams",
    ("POST", r"/v1/refunds"): "RefundCreateParams",
    ("GET", r"/v1/refunds"): "RefundListParams",
    ("GET", r"/v1/refunds/(re|pyr)_\w+"): "RefundRetrieveParams",
    ("GET", r"/v1/events"): "EventListParams",
    ("GET", r"/v1/events/evt_\w+"): "EventRetrieveParams",
    # Accounts v2 and thin events: JSON bodies, params in stripe.params.v2.core.
    ("POST", r"/v2/core/accounts"): "v2.core.AccountCreateParams",
    ("GET", r"/v2/core/accounts"): "v2.core.AccountListParams",
    ("GET", r"/v2/core/accounts/acct_\w+"): "v2.core.AccountRetrieveParams",
    ("POST", r"/v2/core/account_links"): "v2.core.AccountLinkCreateParams",
    ("GET", r"/v2/core/events"): "v2.core.EventListParams",
}

#: The keys of ``RequestOptions`` (api key, idempotency key, Stripe-Account...)
#: travel as headers, never as form parameters.
_REQUEST_OPTION_KEYS = frozenset(stripe.RequestOptions.__annotations__)

#: The fields of a list object (``stripe.ListObject`` declares ``data``,
#: ``has_more`` and ``url``; ``object`` is ``"list"``).
_LIST_FIELDS = frozenset({"object", "data", "has_more", "url"})


# --------------------------------------------------------------------------
# Resource classes
# --------------------------------------------------------------------------


def resource_class(object_name: str) -> type[StripeObject] | None:
    """The stripe-python class for an ``object`` name (``"payment_intent"``...)."""
    if object_name in {"list", "search_result"}:
        return None
    entry = OBJECT_CLASSES.get(object_name) or V2_OBJECT_CLASSES.get(object_name)
    if entry is None:
        return None
    module, name = entry
    cls: type[StripeObject] = getattr(importlib.import_module(module), name)
    return cls


def _classes_by_name() -> dict[str, type[StripeObject]]:
    found: dict[str, type[StripeObject]] = {}
    for object_name in OBJECT_CLASSES:
        cls = resource_class(object_name)
        if cls is not None:
            found.setdefault(cls.__name__, cls)
    return found


_BY_NAME = _classes_by_name()


def _named_class(name: str, owner: type) -> type[StripeObject] | None:
    """The class a forward reference names, as the owner's module imports it."""
    module = sys.modules.get(owner.__module__)
    source = f"from stripe\\.\\S+ import (\\w+) as {name}\\b"
    if module is not None and module.__file__:
        with open(module.__file__, encoding="utf-8") as handle:
            match = re.search(source, handle.read())
        if match:
            name = match.group(1)
    return _BY_NAME.get(name)


def _fields(cls: type) -> dict[str, Any]:
    """Every declared field of a resource class (its annotations, bases included)."""
    fields: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if klass in (StripeObject, dict, object) or not klass.__module__.startswith("stripe"):
            continue
        for name, annotation in vars(klass).get("__annotations__", {}).items():
            if name.startswith("_") or typing.get_origin(annotation) is typing.ClassVar:
                continue
            fields[name] = annotation
    return fields


# --------------------------------------------------------------------------
# Responses
# --------------------------------------------------------------------------


def response_problems(body: Any) -> Problems:
    """What in a response body does not fit stripe-python's typings."""
    problems: Problems = []
    if not isinstance(body, dict):
        return [f"$: a JSON object was expected, not {type(body).__name__}"]
    if "error" in body:
        extra = sorted(set(body) - {"error"})
        if extra:
            problems.append(f"$: an error body holds only 'error', not {extra}")
        _check_value(body["error"], stripe.ErrorObject, "$.error", problems, stripe.ErrorObject)
        return problems
    _check_object(body, "$", problems)
    return problems


def _check_object(value: dict[str, Any], path: str, problems: Problems) -> None:
    """A top-level (``object``-carrying) Stripe object, found by its ``object``."""
    name = value.get("object")
    if name == "list":
        _check_list(value, None, path, problems)
        return
    if name is None and "data" in value and set(value) <= _V2_LIST_FIELDS:
        _check_v2_list(value, path, problems)
        return
    cls = resource_class(name) if isinstance(name, str) else None
    if cls is None:
        problems.append(f"{path}.object: {name!r} is not an object stripe-python knows")
        return
    if name == "v2.core.event":
        # A thin event's fields (related_object...) are declared per type.
        typed = get_v2_event_class(str(value.get("type") or ""))
        if typed is StripeObject:
            problems.append(f"{path}.type: {value.get('type')!r} is not a v2 event type")
            return
        cls = typed
    _check_fields(value, cls, path, problems)


#: A /v2 list answer (stripe.v2.ListObject): no ``object``, page URLs instead of has_more.
_V2_LIST_FIELDS = frozenset({"data", "next_page_url", "previous_page_url"})


def _check_v2_list(value: dict[str, Any], path: str, problems: Problems) -> None:
    for key in ("next_page_url", "previous_page_url"):
        if value.get(key) is not None and not str(value[key]).startswith("/v2/"):
            problems.append(f"{path}.{key}: a /v2/ path or null expected")
    data = value.get("data")
    if not isinstance(data, list):
        problems.append(f"{path}.data: a list expected")
        return
    for index, entry in enumerate(data):
        if isinstance(entry, dict):
            _check_object(entry, f"{path}.data[{index}]", problems)
        else:
            problems.append(f"{path}.data[{index}]: an object expected")


def _check_list(value: dict[str, Any], item: Any, path: str, problems: Problems) -> None:
    unknown = sorted(set(value) - _LIST_FIELDS)
    if unknown:
        problems.append(f"{path}: a list object has no fields {unknown}")
    if value.get("object") != "list":
        problems.append(f"{path}.object: 'list' expected, not {value.get('object')!r}")
    if not isinstance(value.get("has_more"), bool):
        problems.append(f"{path}.has_more: a bool expected")
    if not isinstance(value.get("url"), str):
        problems.append(f"{path}.url: a str expected")
    data = value.get("data")
    if not isinstance(data, list):
        problems.append(f"{path}.data: a list expected")
        return
    for index, entry in enumerate(data):
        if item is None:
            if isinstance(entry, dict):
                _check_object(entry, f"{path}.data[{index}]", problems)
            else:
                problems.append(f"{path}.data[{index}]: an object expected")
        else:
            _check_value(entry, item[0], f"{path}.data[{index}]", problems, item[1])


def _check_fields(value: dict[str, Any], cls: type, path: str, problems: Problems) -> None:
    fields = _fields(cls)
    declared_object = getattr(cls, "OBJECT_NAME", None)
    if declared_object is not None and value.get("object") != declared_object:
        problems.append(f"{path}.object: {declared_object!r} expected, not {value.get('object')!r}")
    for key, field_value in value.items():
        if key not in fields:
            problems.append(f"{path}.{key}: not a field of {cls.__qualname__}")
            continue
        _check_value(field_value, fields[key], f"{path}.{key}", problems, cls)


def _check_value(value: Any, annotation: Any, path: str, problems: Problems, owner: type) -> None:
    """``value`` against one annotation; faults are appended to ``problems``."""
    fault = _fault(value, annotation, path, owner)
    if fault:
        problems.extend(fault)


def _fault(value: Any, annotation: Any, path: str, owner: type) -> Problems:
    if isinstance(annotation, str):
        annotation = ForwardRef(annotation)
    if isinstance(annotation, ForwardRef):
        return _fault_forward(value, annotation.__forward_arg__, path, owner)
    if annotation is Any:
        return _fault_untyped(value, path)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        return _fault_union(value, args, path, owner)
    if origin is Literal:
        if value in args:
            return []
        return [f"{path}: {value!r} is not one of {list(args)}"]
    if origin in (list, typing.List):  # noqa: UP006 - typing.List is what stripe uses
        if not isinstance(value, list):
            return [f"{path}: a list expected, not {_kind(value)}"]
        found: Problems = []
        for index, item in enumerate(value):
            found.extend(_fault(item, args[0], f"{path}[{index}]", owner))
        return found
    if origin in (dict, typing.Dict):  # noqa: UP006
        if not isinstance(value, dict):
            return [f"{path}: an object expected, not {_kind(value)}"]
        found = []
        for key, item in value.items():
            found.extend(_fault(item, args[1], f"{path}.{key}", owner))
        return found
    if isinstance(origin, type) and issubclass(origin, UntypedStripeObject):
        if not isinstance(value, dict):
            return [f"{path}: an object expected, not {_kind(value)}"]
        if not args or args[0] is Any:
            return _fault_untyped(value, path)
        found = []
        for key, item in value.items():
            found.extend(_fault(item, args[0] if args else Any, f"{path}.{key}", owner))
        return found
    if isinstance(origin, type) and issubclass(origin, stripe.ListObject):
        if not isinstance(value, dict):
            return [f"{path}: a list object expected, not {_kind(value)}"]
        found = []
        _check_list(value, (args[0], owner) if args else None, path, found)
        return found
    if annotation is bool:
        return [] if isinstance(value, bool) else [f"{path}: a bool expected, not {_kind(value)}"]
    if annotation is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return [] if ok else [f"{path}: an int expected, not {_kind(value)}"]
    if annotation is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return [] if ok else [f"{path}: a number expected, not {_kind(value)}"]
    if annotation is str:
        return [] if isinstance(value, str) else [f"{path}: a str expected, not {_kind(value)}"]
    if isinstance(annotation, type) and issubclass(annotation, StripeObject):
        if not isinstance(value, dict):
            return [f"{path}: an object expected, not {_kind(value)}"]
        found = []
        _check_fields(value, annotation, path, found)
        return found
    return [f"{path}: cannot check against {annotation!r}"]


def _fault_forward(value: Any, name: str, path: str, owner: type) -> Problems:
    cls = _named_class(name, owner)
    if cls is None:
        return [f"{path}: cannot resolve {name!r}"]
    if not isinstance(value, dict):
        return [f"{path}: an expanded {cls.__name__} expected, not {_kind(value)}"]
    found: Problems = []
    _check_fields(value, cls, path, found)
    return found


def _fault_untyped(value: Any, path: str) -> Problems:
    """``Any`` (an event's ``data.object``): an object with ``object`` is still checked."""
    if isinstance(value, dict) and isinstance(value.get("object"), str):
        found: Problems = []
        _check_object(value, path, found)
        return found
    return []


def _fault_union(value: Any, members: tuple[Any, ...], path: str, owner: type) -> Problems:
    if value is None:
        if type(None) in members:
            return []
        return [f"{path}: null is not allowed here"]
    candidates = _closed(m for m in members if m is not type(None))
    # An object names its own class: only the member it names can match.
    if isinstance(value, dict) and isinstance(value.get("object"), str):
        named = [m for m in candidates if _member_object_name(m, owner) == value["object"]]
        if named:
            candidates = named
        elif any(_member_object_name(m, owner) for m in candidates):
            wanted = sorted(filter(None, (_member_object_name(m, owner) for m in candidates)))
            return [f"{path}.object: one of {wanted} expected, not {value['object']!r}"]
    best: Problems | None = None
    for member in candidates:
        found = _fault(value, member, path, owner)
        if not found:
            return []
        if best is None or len(found) < len(best):
            best = found
    return best or [f"{path}: no type fits {_kind(value)}"]


def _closed(members: Any) -> list[Any]:
    """A union's members, with ``Literal[...] | str`` read as the closed ``Literal``.

    stripe-python leaves every enum open (``|str``) so that a value Stripe
    adds later still parses; a cassette written for this version must use
    one of the values the version knows.
    """
    members = list(members)
    if str in members and any(typing.get_origin(m) is Literal for m in members):
        members.remove(str)
    return members


def _member_object_name(member: Any, owner: type) -> str | None:
    if isinstance(member, str):
        member = ForwardRef(member)
    if isinstance(member, ForwardRef):
        cls = _named_class(member.__forward_arg__, owner)
        return getattr(cls, "OBJECT_NAME", None) if cls else None
    if isinstance(member, type):
        return getattr(member, "OBJECT_NAME", None)
    return None


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


# --------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------


def params_class(method: str, path: str) -> type | None:
    """The ``stripe.params`` TypedDict of a call, from its method and path."""
    for (route_method, pattern), name in PARAMS_BY_ROUTE.items():
        if route_method == method.upper() and re.fullmatch(pattern, path):
            module, _, attribute = f"stripe.params.{name}".rpartition(".")
            params: type = getattr(importlib.import_module(module), attribute)
            return params
    return None


def form_tree(encoded: str) -> dict[str, Any]:
    """A form body or query string as stripe-python encoded it, nested again.

    ``a[b][c]=1`` becomes ``{"a": {"b": {"c": "1"}}}``; ``types[0]=x`` and
    ``expand[]=x`` become lists.
    """
    root: dict[str, Any] = {}
    for key, value in parse_qsl(encoded, keep_blank_values=True):
        parts = re.findall(r"^[^\[]+|\[([^\]]*)\]", key)
        head, rest = key.split("[", 1)[0], parts[1:]
        node: Any = root
        names: list[str] = [head, *rest]
        for index, name in enumerate(names):
            last = index == len(names) - 1
            following = None if last else names[index + 1]
            is_list = following is not None and (following == "" or following.isdigit())
            child: Any = value if last else ([] if is_list else {})
            if isinstance(node, list):
                if name == "" or int(name) >= len(node):
                    node.append(child)
                    node = node[-1]
                else:
                    node = node[int(name)]
            elif last:
                node[name] = child
            else:
                node = node.setdefault(name, child)
    return root


def request_problems(method: str, path: str, encoded: str) -> Problems:
    """What in a request's parameters the params TypedDict does not declare."""
    params = params_class(method, path)
    if params is None:
        return [f"{method} {path}: no params TypedDict mapped (see PARAMS_BY_ROUTE)"]
    problems: Problems = []
    # A /v2 POST sends JSON; a GET (v1 or v2) and a v1 POST a form or query string.
    tree = json.loads(encoded) if encoded.lstrip().startswith("{") else form_tree(encoded)
    if path.startswith("/v2/") and "page" in tree:
        tree.pop("page")  # a next_page_url's opaque cursor, not a parameter
    _check_params(tree, params, "params", problems, top=True)
    return problems


def _typed_dict_fields(params: type) -> dict[str, Any]:
    fields = dict(vars(params).get("__annotations__", {}))
    for base in params.__mro__[1:]:
        fields = {**vars(base).get("__annotations__", {}), **fields}
    return fields


def _check_params(
    value: Any, params: type, path: str, problems: Problems, *, top: bool = False
) -> None:
    if not isinstance(value, dict):
        problems.append(f"{path}: a hash of parameters expected, not {value!r}")
        return
    fields = _typed_dict_fields(params)
    for key, item in value.items():
        if key not in fields or (top and key in _REQUEST_OPTION_KEYS):
            problems.append(f"{path}[{key}]: not a parameter of {params.__name__}")
            continue
        problems.extend(_param_fault(item, fields[key], f"{path}[{key}]", params))


def _resolve(annotation: Any, owner: type) -> Any:
    if isinstance(annotation, ForwardRef):
        annotation = annotation.__forward_arg__
    if isinstance(annotation, str):
        module = sys.modules[owner.__module__]
        # stripe's own annotation text, e.g. "Literal['automatic', 'manual']|str".
        return eval(annotation, vars(typing) | vars(module))
    return annotation


_INT = re.compile(r"-?\d+")


def _param_fault(value: Any, annotation: Any, path: str, owner: type) -> Problems:
    annotation = _resolve(annotation, owner)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.NotRequired or origin is typing.Required:
        return _param_fault(value, args[0], path, owner)
    if origin in (Union, types.UnionType):
        best: Problems | None = None
        for member in _closed(args):
            if member is type(None):
                continue
            found = _param_fault(value, member, path, owner)
            if not found:
                return []
            if best is None or len(found) < len(best):
                best = found
        return best or [f"{path}: no type fits {value!r}"]
    if origin is Literal:
        return [] if value in args else [f"{path}: {value!r} is not one of {list(args)}"]
    if origin in (list, typing.List):  # noqa: UP006
        if not isinstance(value, list):
            return [f"{path}: a list expected, not {value!r}"]
        found: Problems = []
        for index, item in enumerate(value):
            found.extend(_param_fault(item, args[0], f"{path}[{index}]", owner))
        return found
    if origin in (dict, typing.Dict, typing.Mapping) or (  # noqa: UP006
        isinstance(origin, type) and issubclass(origin, UntypedStripeObject)
    ):
        if not isinstance(value, dict):
            return [f"{path}: a hash expected, not {value!r}"]
        return [
            f"{path}[{k}]: a string expected" for k, v in value.items() if not isinstance(v, str)
        ]
    # A form or query string carries text; a /v2 JSON body carries JSON's own types.
    if annotation is bool:
        ok = value in ("true", "false") or isinstance(value, bool)
        return [] if ok else [f"{path}: a bool expected, not {value!r}"]
    if annotation is int:
        ok = (isinstance(value, str) and bool(_INT.fullmatch(value))) or (
            isinstance(value, int) and not isinstance(value, bool)
        )
        return [] if ok else [f"{path}: an int expected, not {value!r}"]
    if annotation is float:
        ok = isinstance(value, str) and bool(re.fullmatch(r"-?\d+(\.\d+)?", value))
        return [] if ok else [f"{path}: a number expected, not {value!r}"]
    if annotation is str:
        return [] if isinstance(value, str) else [f"{path}: a string expected, not {value!r}"]
    if typing_extensions.is_typeddict(annotation):
        found = []
        _check_params(value, annotation, path, found)
        return found
    return [f"{path}: cannot check against {annotation!r}"]
