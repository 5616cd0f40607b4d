"""The shipped translations are complete and match the code.

* ``makemessages`` is clean: run on a copy of the package, it finds exactly
  the msgids of the committed ``django.po`` (none missing, none obsolete).
* Every entry of the committed catalog is translated and none is fuzzy.
* The committed ``django.mo`` (wheels ship it; nothing compiles on install)
  holds the same catalog as ``msgfmt`` makes from the ``.po``.

They need GNU gettext (``xgettext``, ``msgmerge``, ``msgfmt``) and skip
without it. To refresh a catalog after changing strings, see
docs/translations.md.
"""

from __future__ import annotations

import ast
import gettext
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "django_escrow_connect"
LOCALE = PACKAGE / "locale"
LANGUAGES = sorted(path.name for path in LOCALE.iterdir() if path.is_dir())
GETTEXT_TOOLS = ("xgettext", "msgmerge", "msgfmt")

needs_gettext = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in GETTEXT_TOOLS),
    reason="GNU gettext (xgettext, msgmerge, msgfmt) is not installed",
)


def parse_po(path: Path) -> list[dict[str, object]]:
    """The entries of a .po file: ``msgctxt``, ``msgid``, ``msgid_plural``,
    ``msgstr`` (a list: one string, or one per plural form), ``flags``, and
    ``obsolete`` for ``#~`` entries. The header (empty msgid) is included."""
    entries: list[dict[str, object]] = []
    entry: dict[str, object] = {}
    field = ""

    def finish() -> None:
        nonlocal entry
        if "msgid" in entry:
            entries.append(entry)
        entry = {}

    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        obsolete = line.startswith("#~")
        if obsolete:
            line = line[2:].strip()
        if not line:
            finish()
            continue
        if line.startswith("#,"):
            if "msgid" in entry:
                finish()
            entry.setdefault("flags", set()).update(  # type: ignore[union-attr]
                flag.strip() for flag in line[2:].split(",")
            )
            continue
        if line.startswith("#"):
            continue
        continuation = line.startswith('"')
        if continuation:
            value = ast.literal_eval(line)
        else:
            keyword, _, rest = line.partition(" ")
            if keyword in ("msgctxt", "msgid") and "msgstr" in entry:
                finish()
            field = keyword
            value = ast.literal_eval(rest)
            if obsolete:
                entry["obsolete"] = True
        if field.startswith("msgstr"):
            strings = entry.setdefault("msgstr", [])
            assert isinstance(strings, list)
            if not continuation:
                strings.append("")
            strings[-1] += value
        else:
            entry[field] = (str(entry.get(field, "")) if continuation else "") + value
    finish()
    return entries


def msgids(entries: list[dict[str, object]]) -> set[tuple[object, object, object]]:
    return {
        (entry.get("msgctxt"), entry["msgid"], entry.get("msgid_plural"))
        for entry in entries
        if entry["msgid"] and not entry.get("obsolete")
    }


def describe(keys: set[tuple[object, object, object]]) -> str:
    return "\n".join(f"  {msgid!r}" for _, msgid, _ in sorted(keys, key=repr))


@pytest.fixture(scope="module")
def fresh_catalogs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """makemessages for every shipped language, run on a copy of the package."""
    copy = tmp_path_factory.mktemp("makemessages") / "django_escrow_connect"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.mo"))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "django", "makemessages", "--no-obsolete"]
    command += [f"--locale={language}" for language in LANGUAGES]
    subprocess.run(command, cwd=copy, env=env, check=True, capture_output=True, timeout=300)
    return copy / "locale"


def test_german_is_shipped():
    assert "de" in LANGUAGES
    for language in LANGUAGES:
        assert (LOCALE / language / "LC_MESSAGES" / "django.po").is_file()
        assert (LOCALE / language / "LC_MESSAGES" / "django.mo").is_file()


@needs_gettext
@pytest.mark.parametrize("language", LANGUAGES)
def test_makemessages_is_clean(language, fresh_catalogs):
    committed = msgids(parse_po(LOCALE / language / "LC_MESSAGES" / "django.po"))
    found = msgids(parse_po(fresh_catalogs / language / "LC_MESSAGES" / "django.po"))
    missing, obsolete = found - committed, committed - found
    assert not missing, f"strings not in the {language} catalog:\n{describe(missing)}"
    assert not obsolete, f"strings the code no longer has:\n{describe(obsolete)}"


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_string_is_translated(language):
    entries = parse_po(LOCALE / language / "LC_MESSAGES" / "django.po")
    assert len(entries) > 1
    untranslated = [e["msgid"] for e in entries if e["msgid"] and not all(e.get("msgstr", [""]))]
    fuzzy = [e["msgid"] for e in entries if "fuzzy" in e.get("flags", set())]  # type: ignore[operator]
    stale = [e["msgid"] for e in entries if e.get("obsolete")]
    assert not untranslated, f"untranslated in {language}: {untranslated}"
    assert not fuzzy, f"fuzzy in {language}: {fuzzy}"
    assert not stale, f"obsolete (#~) entries in {language}: {stale}"


@needs_gettext
@pytest.mark.parametrize("language", LANGUAGES)
def test_the_committed_mo_matches_the_po(language, tmp_path):
    messages = LOCALE / language / "LC_MESSAGES"
    compiled = tmp_path / "django.mo"
    # --check-format: a translation that drops or renames a %(name)s fails.
    subprocess.run(
        ["msgfmt", "--check-format", "-o", str(compiled), str(messages / "django.po")],
        check=True,
        capture_output=True,
        timeout=60,
    )
    with compiled.open("rb") as fresh, (messages / "django.mo").open("rb") as shipped:
        assert (
            gettext.GNUTranslations(shipped)._catalog == gettext.GNUTranslations(fresh)._catalog
        ), f"locale/{language}/LC_MESSAGES/django.mo is stale: run compilemessages"
