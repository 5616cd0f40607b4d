"""Every relative link in README.md and docs/*.md leads somewhere.

``mkdocs build --strict`` checks the links between pages of docs/, but not
README.md (PyPI's and GitHub's front page) nor the ``docs/<page>.md`` a
docstring or comment points a reader to. A link's ``#anchor`` must be a
heading of the target page under both slug rules it is read with: GitHub's
(the docs are browsed there) and Python-Markdown's (mkdocs).
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Sources whose text may name a docs page for the reader.
SOURCES = ("django_escrow_connect", "tests", "scripts", "example_project", "benchmarks")

_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)
_DOCS_PAGE = re.compile(r"\bdocs/([\w.-]+\.md)\b")


def _markdown_slug(text: str) -> str:
    """Python-Markdown's toc slugify (mkdocs' default)."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _github_slug(text: str) -> str:
    """GitHub's heading ids: punctuation dropped, every space a hyphen."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def _heading_text(raw: str) -> str:
    # Inline markup does not reach the id: `code`, **bold**, [text](link).
    raw = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", raw)
    return raw.replace("`", "").replace("**", "").replace("__", "")


def _anchors(page: Path, slug) -> set[str]:
    text = _FENCE.sub("", page.read_text())
    return {slug(_heading_text(h)) for h in _HEADING.findall(text)}


def _links(page: Path) -> list[str]:
    text = _FENCE.sub("", page.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)  # a link written as code is not a link
    return _LINK.findall(text)


def _cases():
    for page in PAGES:
        for target in _links(page):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            yield pytest.param(page, target, id=f"{page.relative_to(ROOT)}->{target}")


@pytest.mark.parametrize(("page", "target"), list(_cases()))
def test_relative_link_resolves(page, target):
    path, _, anchor = target.partition("#")
    resolved = (page.parent / path).resolve() if path else page
    assert resolved.exists(), f"{page.relative_to(ROOT)} links to missing {path}"
    if anchor and resolved.suffix == ".md":
        for slug in (_markdown_slug, _github_slug):
            anchors = _anchors(resolved, slug)
            assert anchor in anchors, (
                f"{page.relative_to(ROOT)} links to #{anchor}, not a heading of "
                f"{resolved.relative_to(ROOT)} under {slug.__doc__}"
            )


def test_every_docs_page_named_in_the_sources_exists():
    named: dict[str, set[str]] = {}
    files = [ROOT / "README.md", ROOT / "pyproject.toml", ROOT / "CHANGELOG.md"]
    for source in SOURCES:
        files += [p for p in (ROOT / source).rglob("*") if p.suffix in {".py", ".sh", ".md"}]
    for path in files:
        for page in _DOCS_PAGE.findall(path.read_text(errors="replace")):
            named.setdefault(page, set()).add(str(path.relative_to(ROOT)))
    missing = {
        page: sorted(where) for page, where in named.items() if not (ROOT / "docs" / page).exists()
    }
    assert not missing, f"docs pages named but missing: {missing}"
