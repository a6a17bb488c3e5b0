"""Translations: message keys to text in the client's language, from Babel gettext catalogues.

The catalogues live in `locales/<lang>/LC_MESSAGES/messages.po` (msgid = the message key, msgstr
= the text, with `{name}` placeholders). `make setup` compiles them to `.mo`; when a `.mo` is
missing or older than its `.po`, the `.po` is read directly, so a fresh clone works either way.
Every folder under `locales/` is a supported language; English is the fallback.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from babel.messages.catalog import Catalog
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

DEFAULT_LOCALE = "en"
DOMAIN = "messages"
LOCALES_DIR = Path(__file__).resolve().parent.parent / "locales"

# An Accept-Language header longer than this is cut; more entries than this are ignored.
_MAX_HEADER = 1024
_MAX_ENTRIES = 32
_TAG = re.compile(r"^(?:[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*|\*)$")


def _read_catalog(folder: Path) -> Catalog | None:
    po = folder / "LC_MESSAGES" / f"{DOMAIN}.po"
    mo = po.with_suffix(".mo")
    if mo.is_file() and (not po.is_file() or mo.stat().st_mtime >= po.stat().st_mtime):
        with mo.open("rb") as f:
            return read_mo(f)
    if po.is_file():
        with po.open("rb") as f:
            return read_po(f, locale=folder.name, domain=DOMAIN, abort_invalid=True)
    return None


@functools.cache
def catalogs(locales_dir: Path = LOCALES_DIR) -> dict[str, dict[str, str]]:
    """locale -> {key: text}; fuzzy and untranslated entries are left out (they fall back)."""
    result: dict[str, dict[str, str]] = {}
    if not locales_dir.is_dir():
        return result
    for folder in sorted(p for p in locales_dir.iterdir() if p.is_dir()):
        catalog = _read_catalog(folder)
        if catalog is None:
            continue
        result[folder.name.lower().replace("_", "-")] = {
            str(message.id): str(message.string)
            for message in catalog
            if message.id and isinstance(message.string, str) and message.string
            if not message.fuzzy
        }
    return result


def supported_locales() -> tuple[str, ...]:
    """Every language with a catalogue, the default first."""
    found = sorted(catalogs())
    return (DEFAULT_LOCALE, *[code for code in found if code != DEFAULT_LOCALE])


def translate(key: str, locale: str = DEFAULT_LOCALE, **params: Any) -> str:
    """The text of `key` in `locale` (else English, else the key itself), placeholders filled."""
    all_catalogs = catalogs()
    text = all_catalogs.get(locale, {}).get(key)
    if text is None:
        text = all_catalogs.get(DEFAULT_LOCALE, {}).get(key, key)
    if not params:
        return text
    try:
        return text.format(**params)
    except (KeyError, IndexError, ValueError, AttributeError):
        return text


def parse_accept_language(header: str) -> list[tuple[str, float]]:
    """`vi-VN,vi;q=0.9,*;q=0.1` -> [("vi-vn", 1.0), ("vi", 0.9), ("*", 0.1)], best first.

    Malformed entries are skipped; entries with q=0 ("not acceptable") are dropped.
    """
    entries: list[tuple[int, str, float]] = []
    for index, part in enumerate(header[:_MAX_HEADER].split(",")[:_MAX_ENTRIES]):
        tag, *options = (piece.strip() for piece in part.split(";"))
        if not tag or not _TAG.match(tag):
            continue
        quality = 1.0
        for option in options:
            name, _, value = option.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = -1.0
        if not 0.0 < quality <= 1.0:
            continue
        entries.append((index, tag.lower(), quality))
    entries.sort(key=lambda e: (-e[2], e[0]))
    return [(tag, quality) for _, tag, quality in entries]


def negotiate(accept_language: str | None) -> str:
    """The supported language the client prefers most (by quality value), else English."""
    if not accept_language:
        return DEFAULT_LOCALE
    available = supported_locales()
    for tag, _quality in parse_accept_language(accept_language):
        if tag == "*":
            return DEFAULT_LOCALE
        if tag in available:
            return tag
        primary = tag.split("-", 1)[0]
        if primary in available:
            return primary
    return DEFAULT_LOCALE
