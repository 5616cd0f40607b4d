"""The payment's transitions are the only place their states are listed.

A service never keeps a literal collection of payment states equal to a
transition's source states: it asks ``django_fsm.can_proceed`` or, for a
query, ``django_escrow_connect.transitions.sources``. And no module of the
package reads django-fsm's private ``_django_fsm`` metadata (the public API is
``get_all_<field>_transitions`` / ``Field.get_all_transitions``).
"""

from __future__ import annotations

import ast
from pathlib import Path

from django_escrow_connect import swappable, transitions
from django_escrow_connect.states import PaymentStatus

PACKAGE = Path(__file__).resolve().parents[2] / "django_escrow_connect"
ENUM_NAMES = {"S", "PaymentStatus"}


def literal_state_sets(path: Path) -> list[tuple[int, frozenset[str]]]:
    """Every tuple, list or set literal made only of ``PaymentStatus`` members."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Tuple | ast.List | ast.Set) or len(node.elts) < 2:
            continue
        members = [
            element.attr
            for element in node.elts
            if isinstance(element, ast.Attribute)
            and isinstance(element.value, ast.Name)
            and element.value.id in ENUM_NAMES
        ]
        if len(members) == len(node.elts):
            found.append((node.lineno, frozenset(PaymentStatus[m].value for m in members)))
    return found


def transition_sources() -> dict[frozenset[str], str]:
    model = swappable.load("EscrowPayment")
    names = {t.name for t in model._meta.get_field("status").get_all_transitions(model)}
    return {transitions.sources(model, name): name for name in sorted(names)}


def test_no_service_copies_a_transitions_source_states():
    sources = transition_sources()
    copies = [
        f"{path.relative_to(PACKAGE)}:{line} lists the sources of {sources[states]}"
        for path in sorted((PACKAGE / "services").glob("*.py"))
        for line, states in literal_state_sets(path)
        if states in sources
    ]
    assert not copies, copies


def test_the_check_finds_a_copy(tmp_path):
    """The check above reads the literals it is meant to catch."""
    sample = tmp_path / "sample.py"
    sample.write_text("WAITING = (S.AWAITING_PAYMENT, S.PROCESSING, S.FAILED)\n")
    assert literal_state_sets(sample) == [
        (1, transitions.sources(swappable.load("EscrowPayment"), "mark_held"))
    ]


def test_nothing_reads_django_fsm_private_metadata():
    readers = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if "_django_fsm" in path.read_text()
    ]
    assert not readers
