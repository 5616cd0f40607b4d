"""The terms hook of the crash suite (pytest process and server processes).

The server processes cannot see a test's in-memory terms (``EXTRA`` of
tests/payments/test_milestones.py): a task whose title starts with
:data:`PER_MILESTONE` is funded per milestone, in three milestones, read by
every process from the row itself (the title is the terms' description,
``summary`` on the swapped host's job). Other tasks keep the test's terms.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from django_escrow_connect.terms import FUND_PER_MILESTONE, EscrowTerms, MilestoneTerms
from tests.payments.test_milestones import split_terms

PER_MILESTONE = "per-milestone"


def crash_terms(task: Any) -> EscrowTerms:
    terms = split_terms(task)
    if not terms.description.startswith(PER_MILESTONE):
        return terms
    return dataclasses.replace(
        terms,
        milestones=(
            MilestoneTerms("Design", 2_000),
            MilestoneTerms("Build", 5_000),
            MilestoneTerms("Launch", 3_000),
        ),
        funding=FUND_PER_MILESTONE,
    )
