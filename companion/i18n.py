"""Texts in the reader's language: the gettext message catalogs (Babel) and dates in their zone and locale.

The domain names messages by their English source (``companion.domain.messages.N_``); this module looks
them up in ``companion/locale/<language>/LC_MESSAGES/messages.po`` and formats instants with Babel's
CLDR data. The ``.po`` files are the only source: each is compiled in memory the first time its language
is needed (a few milliseconds), so a fresh clone, a test run and an image need no compile step and can
never run a stale ``.mo``. ``pybabel`` keeps the catalogs up to date (the README's "Adding a language").

Which language: the first of the candidates (the account's own choice, then the phone's) that names a
language with a catalog, else English; a message a catalog lacks (or marks fuzzy) falls back to English
on its own. Dates and times use the candidate's full locale (``en-GB`` writes 08:00, ``en-US`` 8:00 AM),
in the reader's time zone, never UTC.
"""

from __future__ import annotations

import io
import logging
from datetime import date, datetime, tzinfo
from functools import cache, lru_cache
from pathlib import Path

from babel import Locale, UnknownLocaleError
from babel.core import negotiate_locale
from babel.dates import format_date, format_datetime, format_time
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

from companion.domain.messages import is_locale_tag

logger = logging.getLogger(__name__)

CATALOG_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "messages"
SOURCE_LANGUAGE = "en"


@cache
def languages() -> tuple[str, ...]:
    """The languages texts can be written in: English (the source) and every language with a catalog."""
    found = sorted(p.parent.parent.name for p in CATALOG_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))
    return (SOURCE_LANGUAGE, *[lang for lang in found if lang != SOURCE_LANGUAGE])


@cache
def _translations(language: str) -> NullTranslations:
    path = CATALOG_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    if not path.exists():
        return NullTranslations()
    with path.open("rb") as po:
        catalog = read_po(po, locale=language)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)  # fuzzy entries are left out: they fall back to English
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


class Reader:
    """How one person reads a text: the language of its words and the locale and zone of its dates."""

    def __init__(self, *candidates: str | None, zone: tzinfo | None = None):
        """``candidates``: language tags in order of preference (the account's, then the phone's); unusable
        ones are skipped. ``zone``: the reader's time zone for dates (UTC if unknown)."""
        self.language, self.locale = _choose(tuple(candidates))
        self.zone = zone

    def gettext(self, message: str) -> str:
        """``message`` (an English source) in the reader's language, or in English if it is not translated."""
        return _translations(self.language).gettext(message)

    def render(self, message: str, **arguments: str) -> str:
        """``message`` translated, then its ``{name}`` arguments filled in."""
        text = self.gettext(message)
        return text.format(**arguments) if arguments else text

    def time(self, instant: datetime) -> str:
        """A time of day in the reader's zone and locale's short format (``08:00``, ``8:00 AM``)."""
        return format_time(instant, format="short", tzinfo=self.zone, locale=self.locale)

    def date(self, day: date) -> str:
        """A calendar date in the locale's medium format (``30 Nov 2026``, ``30.11.2026``)."""
        return format_date(day, format="medium", locale=self.locale)

    def datetime(self, instant: datetime) -> str:
        """A date and time in the reader's zone and locale's medium format."""
        return format_datetime(instant, format="medium", tzinfo=self.zone, locale=self.locale)


@lru_cache(maxsize=1024)  # a deployment sees a few hundred distinct tag pairs; choosing is the costly part
def _choose(candidates: tuple[str | None, ...]) -> tuple[str, Locale]:
    available = languages()
    for tag in candidates:
        if not tag or not is_locale_tag(tag):
            continue
        tag = tag.replace("_", "-")
        language = negotiate_locale([tag.lower()], available, sep="-")
        if language is None:
            continue
        try:
            return language, Locale.parse(tag, sep="-")
        except (UnknownLocaleError, ValueError):
            return language, Locale.parse(language)
    return SOURCE_LANGUAGE, Locale.parse(SOURCE_LANGUAGE)
