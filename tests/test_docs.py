"""The docs: the configuration reference and .env.example are what bot/config.py declares, and the
settings declared are exactly those read."""

from __future__ import annotations

import importlib.util
import re
from types import ModuleType

import pytest

from bot.config import DECLARED, SETTINGS, SettingsReader, read_config
from tests.harness import ROOT

GENERATOR = ROOT / "scripts" / "gen_config_docs.py"


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
