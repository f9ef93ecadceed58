"""Words in the reader's language: gettext catalogs, and texts that are translated where they are shown.

Everything a member or an admin reads is marked in the source with ``_t`` (``_nt`` when it
depends on a count, ``_pt`` when one English word needs a context), which makes a ``Text``:
the English source, which is the catalog's ``msgid``, and the values of its ``{placeholders}``.
Nothing is translated when it is made: the engine raises errors and builds notes in no
language, and the frontend renders each text for whoever reads it, a member by their own
Discord language, then their server's, then English.

Catalogs are the ecosystem's standard: ``bot/locales/atelier.pot`` is extracted from the
source (``pybabel extract``), each language has ``bot/locales/<lang>/LC_MESSAGES/atelier.po``,
and the ``.mo`` files the bot reads are compiled when the package is built (``setup.py``).
A placeholder a translation lost or misspelt falls back to the English text, never to an error.
"""

from __future__ import annotations

import functools
import gettext
import logging
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DOMAIN = "atelier"
LOCALE_DIR = Path(__file__).with_name("locales")
SOURCE_LANGUAGE = "en"
# Each shipped catalog's plural rule, as its ``.po`` header states it. The header, not Babel's CLDR
# data (which changes between releases: 2.19 gives Spanish three forms), is what gettext reads.
PLURAL_FORMS = {
    "es": "nplurals=2; plural=(n != 1);",
    "ja": "nplurals=1; plural=0;",
    "zh_CN": "nplurals=1; plural=0;",
    "zh_TW": "nplurals=1; plural=0;",
}


@dataclass(frozen=True)
class Text:
    """A text to show: its English source and the values of its placeholders (themselves texts or not)."""

    msgid: str
    params: tuple[tuple[str, object], ...] = ()
    plural: str | None = None  # with ``count``: the English plural (``msgid`` is the singular)
    count: int | None = None
    context: str | None = None

    def __str__(self) -> str:
        """The English text (for logs and tests; members get ``Catalogs.render``)."""
        return render_source(self)

    def to_json(self) -> dict[str, Any]:
        """The text as JSON (kept with a notice owed to a member, rendered when it is sent)."""
        params = {name: value.to_json() if isinstance(value, Text) else value for name, value in self.params}
        out: dict[str, Any] = {"msgid": self.msgid, "params": params}
        if self.plural is not None:
            out |= {"plural": self.plural, "count": self.count}
        if self.context is not None:
            out["context"] = self.context
        return out

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Text:
        """What ``to_json`` wrote (a nested text is a mapping with a ``msgid``)."""
        params = tuple(
            (name, cls.from_json(item) if isinstance(item, Mapping) and "msgid" in item else item)
            for name, item in dict(value.get("params") or {}).items()
        )
        return cls(
            str(value["msgid"]),
            params,
            plural=value.get("plural"),
            count=value.get("count"),
            context=value.get("context"),
        )


def _t(msgid: str, /, **params: object) -> Text:
    """Mark an English text for translation; ``params`` fill its ``{placeholders}``."""
    return Text(msgid, tuple(params.items()))


def _nt(singular: str, plural: str, count: int, /, **params: object) -> Text:
    """A text that depends on ``count`` (which also fills ``{count}``)."""
    return Text(singular, tuple({"count": count, **params}.items()), plural=plural, count=count)


def _pt(context: str, msgid: str, /, **params: object) -> Text:
    """A text whose English alone is ambiguous (a command's name, a button's label): ``context`` says which."""
    return Text(msgid, tuple(params.items()), context=context)


Renderable = Text | str


def placeholders(template: str) -> set[str]:
    """The names of a template's ``{placeholders}``."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def _fill(template: str, params: dict[str, object], fallback: str) -> str:
    try:
        return template.format(**params)
    except (KeyError, IndexError, ValueError):
        log.warning("a translation of %r does not fit its placeholders; English is shown", fallback[:80])
        return fallback.format(**params)


def render_source(text: Renderable) -> str:
    """A text in English, the language of the source."""
    if isinstance(text, str):
        return text
    params = {name: render_source(value) if isinstance(value, Text) else value for name, value in text.params}
    template = text.msgid if text.plural is None or text.count == 1 else text.plural
    return template.format(**params)


def language_of(locale: str | None, catalogs: Iterable[str]) -> str | None:
    """The catalog for a Discord locale ("zh-CN" -> "zh_CN", "es-419" -> "es"), or ``None``."""
    if not locale:
        return None
    shipped = set(catalogs) | {SOURCE_LANGUAGE}
    exact = locale.replace("-", "_")
    if exact in shipped:
        return exact
    base = exact.split("_")[0]
    return base if base in shipped else None


class Catalogs:
    """The shipped languages' compiled catalogs, read once; immutable afterwards."""

    def __init__(self, directory: Path = LOCALE_DIR) -> None:
        self._translations: dict[str, gettext.GNUTranslations] = {}
        for compiled in sorted(directory.glob(f"*/LC_MESSAGES/{DOMAIN}.mo")):
            with compiled.open("rb") as handle:
                self._translations[compiled.parent.parent.name] = gettext.GNUTranslations(handle)

    @property
    def languages(self) -> list[str]:
        """English and every language with a compiled catalog."""
        return [SOURCE_LANGUAGE, *sorted(self._translations)]

    def language(self, *locales: str | None) -> str:
        """The first of ``locales`` (Discord's, e.g. the member's then the server's) with a catalog, else English."""
        for locale in locales:
            found = language_of(locale, self._translations)
            if found is not None:
                return found
        return SOURCE_LANGUAGE

    def render(self, text: Renderable, language: str | None) -> str:
        """``text`` in ``language`` (English where the catalog has no translation)."""
        if isinstance(text, str):
            return text
        translations = self._translations.get(language or SOURCE_LANGUAGE)
        if translations is None:
            return render_source(text)
        params = {
            name: self.render(value, language) if isinstance(value, Text) else value for name, value in text.params
        }
        if text.plural is not None:
            count = text.count if text.count is not None else 1
            if text.context is not None:
                template = translations.npgettext(text.context, text.msgid, text.plural, count)
            else:
                template = translations.ngettext(text.msgid, text.plural, count)
        elif text.context is not None:
            template = translations.pgettext(text.context, text.msgid)
        else:
            template = translations.gettext(text.msgid)
        english = text.msgid if text.plural is None or text.count == 1 else text.plural
        return _fill(template, params, english)

    def translation(self, msgid: str, language: str, context: str | None = None) -> str | None:
        """A catalog's translation of ``msgid`` as it is (no placeholders filled), or ``None``."""
        translations = self._translations.get(language)
        if translations is None:
            return None
        found = translations.pgettext(context, msgid) if context is not None else translations.gettext(msgid)
        return found if found != msgid else None


@functools.cache
def catalogs() -> Catalogs:
    """The catalogs shipped with the package (read on first use; never changed)."""
    loaded = Catalogs()
    if len(loaded.languages) == 1:
        log.warning(
            "no compiled catalogs in %s: everything is in English (build the package to compile them)", LOCALE_DIR
        )
    return loaded
