"""The catalogs: complete in every shipped language, in step with the source, and read safely.

- Every text of the source catalog (``atelier.pot``) is translated, not fuzzy, in every shipped
  ``.po``, with the same placeholders, and the ``.pot`` holds exactly what the source marks.
- The compiled catalogs the bot reads are those of the ``.po`` files (built by ``pip install``).
- Rendering: the member's language, then the server's, then English; a translation with the
  wrong placeholders shows the English text rather than failing.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import discord
import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from discord import app_commands

from bot.i18n import LOCALE_DIR, PLURAL_FORMS, Catalogs, _nt, _pt, _t, catalogs, language_of, placeholders
from cogs.core.command_sync import schema_hash
from cogs.core.language import _desc, _name
from cogs.core.translator import CatalogTranslator, valid_slash_name

ROOT = Path(__file__).resolve().parent.parent
# The keywords of the `pybabel extract` command in docs/translating.md.
KEYWORDS = {"_t": None, "_nt": (1, 2), "_pt": ((1, "c"), 2), "_name": ((1, "c"), 2), "_desc": None}
SHIPPED = sorted(path.parent.parent.name for path in LOCALE_DIR.glob("*/LC_MESSAGES/atelier.po"))


def read(path: Path) -> Catalog:
    with path.open("rb") as handle:
        return read_po(handle)


def template() -> Catalog:
    return read(LOCALE_DIR / "atelier.pot")


def forms(message: Message) -> list[str]:
    return list(message.id) if isinstance(message.id, tuple) else [message.id]


def translations(message: Message) -> list[str]:
    return list(message.string) if isinstance(message.string, tuple) else [message.string]


def test_simplified_chinese_is_shipped() -> None:
    assert "zh_CN" in SHIPPED


def test_the_template_holds_exactly_what_the_source_marks() -> None:
    extracted: set[tuple[str | None, str]] = set()
    for directory in ("bot", "cogs"):
        for _file, _line, msgid, _comments, context in extract_from_dir(ROOT / directory, keywords=KEYWORDS):
            extracted.add((context, msgid[0] if isinstance(msgid, tuple) else msgid))
    pot = {(m.context, forms(m)[0]) for m in template() if m.id}
    assert len(extracted) > 150
    missing, stale = sorted(extracted - pot, key=str), sorted(pot - extracted, key=str)
    assert (missing, stale) == ([], []), "run the pybabel extract and update commands in docs/translating.md"


@pytest.mark.parametrize("language", SHIPPED)
def test_every_text_is_translated_with_the_same_placeholders(language: str) -> None:
    po = read(LOCALE_DIR / language / "LC_MESSAGES" / "atelier.po")
    problems = []
    for source in template():
        if not source.id:
            continue
        found = po.get(source.id, source.context)
        english = forms(source)
        if found is None or found.fuzzy or not all(translations(found)):
            problems.append(f"untranslated: {english[0]!r}")
            continue
        wanted = set().union(*(placeholders(form) for form in english))
        for translated in translations(found):
            got = placeholders(translated)
            # A language with one plural form may leave {count} out of "one …" only if English does too.
            if not (placeholders(english[0]) <= got <= wanted):
                problems.append(f"placeholders {sorted(got)} for {english[0]!r} (want {sorted(wanted)})")
    assert problems == []


@pytest.mark.parametrize("language", SHIPPED)
def test_the_compiled_catalogs_are_those_of_the_po_files(language: str) -> None:
    po = read(LOCALE_DIR / language / "LC_MESSAGES" / "atelier.po")
    loaded = catalogs()
    assert language in loaded.languages, "compile the catalogs: pip install -e ."
    for message in po:
        if message.id and not message.pluralizable and message.string:
            kept = None if message.string == message.id else message.string  # the same as English: None
            assert loaded.translation(message.id, language, message.context) == kept, (
                "the .mo is older than the .po: pip install -e . compiles it again"
            )


def test_every_shipped_language_has_a_stated_plural_rule() -> None:
    assert sorted(PLURAL_FORMS) == SHIPPED


@pytest.mark.parametrize("language", SHIPPED)
def test_each_catalog_states_the_plural_rule_the_code_expects(language: str) -> None:
    """The ``.po`` header, not Babel's CLDR data of the day, decides the plural forms the bot reads."""
    po = read(LOCALE_DIR / language / "LC_MESSAGES" / "atelier.po")
    assert po.mime_headers and dict(po.mime_headers)["Plural-Forms"] == PLURAL_FORMS[language]
    # The compiled catalog carries the same rule: every plural text has exactly that many forms.
    nplurals = int(PLURAL_FORMS[language].split(";")[0].split("=")[1])
    for message in po:
        if message.id and message.pluralizable:
            assert len(translations(message)) == nplurals, message.id
    compiled = LOCALE_DIR / language / "LC_MESSAGES" / "atelier.mo"
    assert PLURAL_FORMS[language].encode() in compiled.read_bytes(), "pip install -e . compiles the catalogs"


@pytest.mark.parametrize("language", SHIPPED)
def test_translated_command_names_follow_discords_rules(language: str) -> None:
    po = read(LOCALE_DIR / language / "LC_MESSAGES" / "atelier.po")
    for message in po:
        if message.context in ("command name", "option name") and message.string:
            assert message.string == message.id or len(message.string) <= 32, message.id
            # Slash names (lowercase, no spaces); a context menu ("Edit images") may have spaces.
            if message.id == message.id.lower():
                assert valid_slash_name(message.string), (language, message.id, message.string)


# The test catalog states its own plural rule (French's), so no CLDR release can change it.
TEST_HEADER = b"""msgid ""
msgstr ""
"Plural-Forms: nplurals=2; plural=(n > 1);\\n"
"Content-Type: text/plain; charset=utf-8\\n"
"""


def make_catalogs(
    tmp_path: Path, entries: dict[str | tuple[str, str], str | tuple[str, ...]], language: str = "xx"
) -> Catalogs:
    """Catalogs with one language (``xx``) holding ``entries`` (msgid or (context, msgid) -> translation)."""
    catalog = read_po(io.BytesIO(TEST_HEADER))
    assert catalog.plural_forms == "nplurals=2; plural=(n > 1);"
    for key, value in entries.items():
        context, msgid = key if isinstance(key, tuple) else (None, key)
        if isinstance(value, tuple):
            catalog.add((msgid, msgid + "s"), value, context=context)
        else:
            catalog.add(msgid, value, context=context)
    target = tmp_path / language / "LC_MESSAGES"
    target.mkdir(parents=True)
    with (target / "atelier.mo").open("wb") as handle:
        write_mo(handle, catalog)
    return Catalogs(tmp_path)


def test_rendering_translates_nested_texts_plurals_and_contexts(tmp_path: Path) -> None:
    loaded = make_catalogs(
        tmp_path,
        {
            "Hello {who}": "Bonjour {who}",
            "friend": "ami",
            "{count} edit": ("{count} retouche", "{count} retouches"),
            ("button", "Refine"): "Affiner",
        },
    )
    assert loaded.languages == ["en", "xx"]
    assert loaded.render(_t("Hello {who}", who=_t("friend")), "xx") == "Bonjour ami"
    assert loaded.render(_t("Hello {who}", who=_t("friend")), "en") == "Hello friend"
    assert loaded.render(_nt("{count} edit", "{count} edits", 3), "xx") == "3 retouches"
    assert loaded.render(_nt("{count} edit", "{count} edits", 1), "xx") == "1 retouche"
    assert loaded.render(_nt("{count} edit", "{count} edits", 3), "en") == "3 edits"
    assert loaded.render(_pt("button", "Refine"), "xx") == "Affiner"
    assert loaded.render(_t("Refine"), "xx") == "Refine"  # no context: another text
    assert loaded.render(_t("Not in the catalog"), "xx") == "Not in the catalog"
    assert loaded.render("a prompt, as typed", "xx") == "a prompt, as typed"


def test_a_translation_that_lost_its_placeholders_falls_back_to_english(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loaded = make_catalogs(tmp_path, {"Wait {seconds} s": "Attendez {secondes} s"})
    assert loaded.render(_t("Wait {seconds} s", seconds=5), "xx") == "Wait 5 s"
    assert "does not fit its placeholders" in caplog.text


def test_the_members_language_then_the_servers_then_english(tmp_path: Path) -> None:
    loaded = make_catalogs(tmp_path, {"x": "y"})
    assert loaded.language("xx", "en-US") == "xx"
    assert loaded.language("fr", "xx") == "xx"  # a language with no catalog: the server's
    assert loaded.language("en-US", "xx") == "en"  # the member reads English: English
    assert loaded.language(None, None) == "en"
    assert language_of("zh-CN", ["zh_CN", "zh_TW"]) == "zh_CN"
    assert language_of("zh-TW", ["zh_CN", "zh_TW"]) == "zh_TW"
    assert language_of("es-419", ["es"]) == "es"
    assert language_of("es-ES", ["es"]) == "es"
    assert language_of("ko", ["zh_CN"]) is None


def test_slash_names_follow_discords_rules() -> None:
    assert valid_slash_name("edit") and valid_slash_name("编辑") and valid_slash_name("image-1_x")
    assert not valid_slash_name("Edit") and not valid_slash_name("two words") and not valid_slash_name("x" * 33)
    assert not valid_slash_name("")


async def test_a_changed_translation_changes_the_synced_commands_hash(tmp_path: Path) -> None:
    @app_commands.command(name=_name("command name", "history"), description=_desc("Your last edits"))
    async def history(interaction: discord.Interaction) -> None:
        pass

    tree: app_commands.CommandTree[discord.Client] = app_commands.CommandTree(
        discord.Client(intents=discord.Intents.none())
    )

    async def synced(name: str, entries: dict[str | tuple[str, str], str | tuple[str, ...]]) -> dict[str, Any]:
        translator = CatalogTranslator(make_catalogs(tmp_path / name, entries, language="de"))
        return await history.get_translated_payload(tree, translator)

    first = await synced("a", {("command name", "history"): "verlauf", "Your last edits": "Deine letzten"})
    assert first["name_localizations"] == {"de": "verlauf"}
    assert first["description_localizations"] == {"de": "Deine letzten"}
    changed = await synced("b", {("command name", "history"): "verlauf", "Your last edits": "Zuletzt"})
    assert schema_hash([changed]) != schema_hash([first])
    # A name that breaks Discord's rules is left out (English is used), so the sync is never refused.
    broken = await synced("c", {("command name", "history"): "Mein Verlauf"})
    assert broken["name_localizations"] == {}
