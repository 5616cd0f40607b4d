"""Every error code the API can answer with is in the docs' error tables.

The codes are read from the code itself: each ``errors.<Class>(...)`` raised
in ``services/`` and ``api/`` (its ``code=``, else the class's ``code``), with
the HTTP status of its class (``services/errors.py``). Payment codes belong
in docs/payments.md, onboarding codes (``services/accounts.py``,
``api/onboarding.py``) in docs/onboarding.md. A code added to the code but
not to the docs fails here, and so does a documented code that no longer
exists. ``python tests/foundation/test_error_codes_documented.py`` prints
the table rows that are missing.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "django_escrow_connect"
DOCS = ROOT / "docs"
ONBOARDING_SOURCES = ("services/accounts.py", "api/onboarding.py")
#: ``code=`` expressions that are not literals, and the codes they can give.
#: ``None``: Stripe's own code passes through (``exc.code``), or the class's
#: code when Stripe gives none; the class's row covers it.
DYNAMIC = {
    "exc.code": None,
    "FREEZE_CODES[hold.kind]": "django_escrow_connect.services.radar.FREEZE_CODES",
}
#: What every API view answers for framework errors (``api/errors.py``).
API_WIDE = {
    (400, "invalid"),
    (400, "parse_error"),
    (401, "not_authenticated"),
    (403, "forbidden"),
    (404, "not_found"),
    (411, "length_required"),
    (413, "request_too_large"),
    (429, "throttled"),
}


def error_classes() -> dict[str, tuple[int, str]]:
    """``{class name: (status, code)}`` from services/errors.py."""
    tree = ast.parse((PACKAGE / "services" / "errors.py").read_text())
    found: dict[str, dict[str, object]] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        attrs: dict[str, object] = {}
        for base in node.bases:
            if isinstance(base, ast.Name) and base.id in found:
                attrs.update(found[base.id])
        for stmt in node.body:
            if (
                isinstance(stmt, ast.Assign)
                and isinstance(stmt.targets[0], ast.Name)
                and isinstance(stmt.value, ast.Constant)
            ):
                attrs[stmt.targets[0].id] = stmt.value.value
        found[node.name] = attrs
    return {
        name: (int(attrs["status_code"]), str(attrs["code"]))  # type: ignore[call-overload]
        for name, attrs in found.items()
        if "status_code" in attrs and "code" in attrs
    }


def _dynamic(expr: str, default: str) -> list[str]:
    if expr not in DYNAMIC:
        raise AssertionError(
            f"code={expr} is not a literal: add it to DYNAMIC in {Path(__file__).name}"
        )
    target = DYNAMIC[expr]
    if target is None:
        return [default]
    module, _, name = target.rpartition(".")
    return sorted(set(getattr(__import__(module, fromlist=[name]), name).values()))


def raised_codes(paths: list[Path]) -> set[tuple[int, str]]:
    """``(status, code)`` of every ``errors.<Class>(...)`` in ``paths``."""
    classes = error_classes()
    codes: set[tuple[int, str]] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "errors"
                and node.func.attr in classes
            ):
                continue
            status, default = classes[node.func.attr]
            [code] = [kw.value for kw in node.keywords if kw.arg == "code"] or [None]
            if code is None or (isinstance(code, ast.Constant) and code.value is None):
                codes.add((status, default))
            elif isinstance(code, ast.Constant):
                codes.add((status, str(code.value)))
            elif isinstance(code, ast.BoolOp) and isinstance(code.values[-1], ast.Constant):
                # ``exc.code or "fallback"``
                codes.add((status, str(code.values[-1].value)))
                _dynamic(ast.unparse(code.values[0]), default)
            else:
                codes.update((status, c) for c in _dynamic(ast.unparse(code), default))
    return codes


def sources(onboarding: bool) -> list[Path]:
    paths = sorted([*PACKAGE.glob("services/*.py"), *PACKAGE.glob("api/*.py")])
    paths = [p for p in paths if p.name != "errors.py"]
    chosen = [p for p in paths if str(p.relative_to(PACKAGE)) in ONBOARDING_SOURCES]
    return chosen if onboarding else [p for p in paths if p not in chosen]


def documented(page: str) -> set[tuple[int, str]]:
    """``(status, code)`` rows of the ``| status | code | when |`` tables of ``page``."""
    rows = re.findall(r"^\|\s*(\d{3})\s*\|\s*`([a-z_]+)`\s*\|", (DOCS / page).read_text(), re.M)
    return {(int(status), code) for status, code in rows}


def missing_and_stale(page: str, onboarding: bool) -> tuple[list[str], list[str]]:
    wanted = raised_codes(sources(onboarding)) | API_WIDE
    have = documented(page)
    missing = [f"| {s} | `{c}` | ... |" for s, c in sorted(wanted - have)]
    stale = [f"{s} {c}" for s, c in sorted(have - wanted)]
    return missing, stale


def onboarding_missing_and_stale() -> tuple[list[str], list[str]]:
    """:func:`missing_and_stale` of docs/onboarding.md, which documents fewer and more codes.

    The framework's own codes are documented once, on the payments page; the
    onboarding table also lists codes raised by shared services.
    """
    missing, stale = missing_and_stale("onboarding.md", onboarding=True)
    missing = [row for row in missing if (int(row[2:5]), row.split("`")[1]) not in API_WIDE]
    shared = raised_codes(sources(onboarding=False))
    stale = [row for row in stale if tuple(row.split()) not in {(str(s), c) for s, c in shared}]
    return missing, stale


def test_payments_page_lists_every_payment_error_code() -> None:
    missing, stale = missing_and_stale("payments.md", onboarding=False)
    assert missing == [], "docs/payments.md error codes lacks:\n" + "\n".join(missing)
    assert stale == [], f"docs/payments.md documents codes the code never answers: {stale}"


def test_onboarding_page_lists_every_onboarding_error_code() -> None:
    missing, stale = onboarding_missing_and_stale()
    assert missing == [], "docs/onboarding.md error codes lacks:\n" + "\n".join(missing)
    assert stale == [], f"docs/onboarding.md documents codes the code never answers: {stale}"


def test_the_collector_sees_the_codes_of_the_issue() -> None:
    """The codes issue 12 found missing are collected (the check can fail)."""
    codes = {code for _, code in raised_codes(sources(onboarding=False))}
    assert {
        "account_not_ready",
        "refund_pending",
        "partial_refund_unsupported",
        "invalid_amount",
        "charge_pending",
        "radar_review_open",
        "early_fraud_warning_open",
    } <= codes


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    for page, found in (
        ("payments.md", missing_and_stale("payments.md", onboarding=False)),
        ("onboarding.md", onboarding_missing_and_stale()),
    ):
        missing, stale = found
        sys.stdout.write("\n".join([f"docs/{page}: missing rows", *missing, f"stale: {stale}"]))
        sys.stdout.write("\n")
