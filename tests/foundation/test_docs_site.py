"""The documentation site's configuration holds together.

``mkdocs build --strict`` checks links between pages, but not what lies outside
``docs/``: a page left out of the nav only gets an INFO line (it builds but no
menu reaches it), README.md's links are rendered by GitHub and PyPI, and the
published site is configured in three files that must agree.
"""

import pathlib
import re

import pytest
import yaml

ROOT = pathlib.Path(__file__).parents[2]
DOCS = ROOT / "docs"


def _nav_pages(nav: list[object]) -> set[str]:
    pages: set[str] = set()
    for item in nav:
        for value in item.values() if isinstance(item, dict) else [item]:
            if isinstance(value, list):
                pages |= _nav_pages(value)
            elif isinstance(value, str):
                pages.add(value)
    return pages


def _mkdocs() -> dict[str, object]:
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())


def test_every_docs_page_is_in_the_nav() -> None:
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    nav = _nav_pages(_mkdocs()["nav"])  # type: ignore[arg-type]
    assert sorted(pages - nav) == [], "docs pages missing from mkdocs.yml nav"
    assert sorted(nav - pages) == [], "mkdocs.yml nav names pages that do not exist"


def test_readme_relative_links_point_at_files() -> None:
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", readme)
    relative = [t.split("#")[0] for t in targets if "://" not in t and not t.startswith("#")]
    assert relative, "README.md has no relative links: the pattern no longer matches"
    missing = [t for t in relative if not (ROOT / t).exists()]
    assert missing == []


def test_read_the_docs_builds_strictly_with_pinned_mkdocs() -> None:
    config = yaml.safe_load((ROOT / ".readthedocs.yaml").read_text())
    assert config["mkdocs"] == {"configuration": "mkdocs.yml", "fail_on_warning": True}
    requirements = [entry["requirements"] for entry in config["python"]["install"]]
    assert requirements == ["docs/requirements.txt"]
    pins = [
        line.strip()
        for line in (ROOT / "docs" / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert pins, "docs/requirements.txt installs nothing"
    assert all("==" in pin for pin in pins), f"unpinned docs requirements: {pins}"


def test_package_metadata_points_at_the_published_site() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["urls"]["Documentation"] == _mkdocs()["site_url"]
