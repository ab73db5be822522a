"""The message catalogs: every text a patient or caregiver reads is in each language's catalog, translated,
with its placeholders; the language is chosen per reader and falls back to English per message."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from companion import i18n
from companion.domain.messages import is_locale_tag
from companion.domain.notifications import TEMPLATES

PACKAGE = i18n.CATALOG_DIR.parent
PLACEHOLDER = re.compile(r"\{\w+\}")


def _source_messages() -> set[str]:
    found = extract_from_dir(str(PACKAGE), method_map=[("**.py", "python")], keywords={"N_": None})
    return {message for _, _, message, _, _ in found}


def _catalog(language: str):
    with (i18n.CATALOG_DIR / language / "LC_MESSAGES" / "messages.po").open("rb") as po:
        return read_po(po, locale=language)


def test_there_are_at_least_two_languages_besides_english():
    assert {"en", "de", "es"} <= set(i18n.languages())


def test_the_template_lists_every_message_the_code_marks():
    with (i18n.CATALOG_DIR / "messages.pot").open("rb") as pot:
        template = {m.id for m in read_po(pot) if m.id}
    assert template == _source_messages()


@pytest.mark.parametrize("language", [lang for lang in i18n.languages() if lang != "en"])
def test_every_message_is_translated_keeping_its_placeholders(language):
    catalog = _catalog(language)
    entries = {m.id: m for m in catalog if m.id}
    assert set(entries) == _source_messages()
    assert [m.id for m in entries.values() if not m.string or m.fuzzy] == []
    assert [m.id for m in entries.values() if set(PLACEHOLDER.findall(m.id)) != set(PLACEHOLDER.findall(m.string))] == []
    assert [problem for m in catalog for problem in m.check(catalog)] == []


def test_every_push_text_is_in_the_catalogs():
    texts = {line.message for t in TEMPLATES.values() for line in (t.title, t.body, t.untimed_body)}
    assert texts <= _source_messages()


def test_the_first_usable_candidate_language_wins():
    assert i18n.Reader("de-AT", "es-ES").language == "de"
    assert i18n.Reader(None, "es_MX").language == "es"
    assert i18n.Reader("fr-FR", "es-ES").language == "es"
    assert i18n.Reader("not a tag", "fr").language == "en"


def test_a_message_missing_from_a_catalog_is_said_in_english():
    assert i18n.Reader("de").gettext("A line no catalog holds") == "A line no catalog holds"
    assert i18n.Reader("de").gettext("Pain flare") == "Schmerzschub"


def test_times_are_on_the_readers_clock_in_their_locales_format():
    instant = datetime(2026, 7, 1, 6, 30, tzinfo=UTC)
    assert i18n.Reader("de-DE", zone=ZoneInfo("Europe/Berlin")).time(instant) == "08:30"
    assert i18n.Reader("en-US", zone=ZoneInfo("America/New_York")).time(instant) == "2:30\u202fAM"
    assert i18n.Reader("es", zone=ZoneInfo("Australia/Lord_Howe")).datetime(instant) == "1 jul 2026, 17:00:00"


@pytest.mark.parametrize("tag", ["en", "de-AT", "es-419", "zh-Hant-TW", "pt_BR", "fil"])
def test_language_tags_in_their_common_shapes_are_accepted(tag):
    assert is_locale_tag(tag)


@pytest.mark.parametrize("tag", ["", "e", "english", "de-", "de-AT-x", "../../etc", "de AT", "12"])
def test_anything_else_is_not_a_language_tag(tag):
    assert not is_locale_tag(tag)
