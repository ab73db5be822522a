"""How the domain names a text a person will read, without translating it.

A text is a message id (its English source, as gettext uses it) plus the named arguments it takes; the
catalog lookup, plural forms and date formatting belong to ``companion.i18n`` (Babel). ``N_`` marks a
message id so that ``pybabel extract -k N_`` finds it (see the README's "Adding a language").
"""

from __future__ import annotations

import re

# A BCP 47 language tag as phones report them, in its common shapes: a language, then an optional script
# and region ("en", "de-AT", "es-419", "zh-Hant-TW"); underscores (Android's "de_AT") are accepted too.
_LOCALE_TAG = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z]{4})?([-_]([A-Za-z]{2}|[0-9]{3}))?$")


def N_(message: str) -> str:  # noqa: N802 - the gettext convention for "mark, do not translate"
    """Mark ``message`` for the message catalogs; it is translated where it is shown, not here."""
    return message


def is_locale_tag(tag: str) -> bool:
    """Whether ``tag`` is a language tag Companion accepts for a person or a phone (BCP 47, common shapes)."""
    return bool(_LOCALE_TAG.fullmatch(tag))
