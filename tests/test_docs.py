"""The docs: the configuration reference and .env.example are what bot/config.py declares, the
settings declared are exactly those read, and every relative link leads somewhere."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from bot.config import DECLARED, SETTINGS, SettingsReader, read_config
from tests.harness import ROOT

GENERATOR = ROOT / "scripts" / "gen_config_docs.py"
DOCS = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "bench" / "RESULTS.md", *sorted((ROOT / "docs").glob("*.md"))]
# Linked to before they exist: written on another branch. Drop an entry once its file is merged.
PENDING: set[Path] = set()
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config_docs", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["docs/configuration.md", ".env.example"])
def test_the_generated_files_are_what_bot_config_declares(name: str) -> None:
    made = generator().OUTPUTS[ROOT / name]()
    assert (ROOT / name).read_text() == made, (
        f"{name} differs from the settings declared in bot/config.py: run python scripts/gen_config_docs.py"
    )


def read_with_defaults() -> SettingsReader:
    reader = SettingsReader({"DISCORD_TOKEN": "token", "IMAGE_API_KEY": "key"})
    read_config(reader)
    return reader


def test_every_declared_setting_is_read_and_nothing_else() -> None:
    assert len(DECLARED) == len(SETTINGS), "a setting is declared twice"
    assert set(read_with_defaults().defaults) == DECLARED


def test_a_setting_that_is_not_declared_cannot_be_read() -> None:
    with pytest.raises(LookupError, match="NOT_A_SETTING is read but not declared"):
        SettingsReader({"NOT_A_SETTING": "1"}).integer("NOT_A_SETTING", 1)


def shown(value: object) -> str:
    """A default as the reference writes it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def test_each_documented_default_is_the_one_load_config_uses() -> None:
    used = read_with_defaults().defaults
    for setting in SETTINGS:
        literal = re.fullmatch(r"`([^`]*)`", setting.default)
        if literal and used[setting.name] is not None:
            assert literal[1] == shown(used[setting.name]), setting.name
        elif not literal:
            # Words ("none", "off", "unlimited"): the code's default must mean that too.
            assert used[setting.name] in (None, 0), (setting.name, used[setting.name])


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading (without its ``-1`` suffixes for repeats)."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def without_code_blocks(path: Path) -> str:
    return re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)


def prose(path: Path) -> str:
    """A Markdown file without its code blocks and code spans, where nothing is a link."""
    return re.sub(r"`[^`\n]*`", "", without_code_blocks(path))


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", without_code_blocks(path), flags=re.M):
        anchor = slug(heading)
        n = 0
        while anchor + (f"-{n}" if n else "") in found:
            n += 1
        found.add(anchor + (f"-{n}" if n else ""))
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_a_file_that_exists(doc: Path) -> None:
    assert doc.exists()
    broken = []
    for target in LINK.findall(prose(doc)):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        file_part, _, anchor = target.partition("#")
        linked = (doc.parent / file_part).resolve() if file_part else doc
        if linked in PENDING:
            continue
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target} (no such heading)")
    assert broken == [], f"{doc.relative_to(ROOT)} links to what does not exist: {broken}"


def test_the_readme_shows_the_command_ci_runs() -> None:
    ci_command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci_command in (ROOT / "README.md").read_text().splitlines()
