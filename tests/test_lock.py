"""The lock files: every requirement of ``pyproject.toml`` pinned, with hashes, and one version of each.

The README's commands, ``.ci/run`` and the Dockerfile install ``requirements/*.txt`` with
``--require-hashes`` and then the package with ``--no-deps``, so a dependency added to
``pyproject.toml`` but not locked would be missing at run time; this test says so first.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def pins(name: str) -> dict[str, str]:
    """``{package: version}`` of a lock file; every pin must carry at least one hash."""
    text = (ROOT / "requirements" / name).read_text()
    found: dict[str, str] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        match = PIN.match(block)
        if match:
            assert "--hash=sha256:" in block, f"{match[1]} in {name} has no hash"
            found[canonicalize_name(match[1])] = match[2]
    return found


def project() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)


def requirements(*extras: str) -> list[Requirement]:
    meta = project()
    listed = list(meta["project"]["dependencies"])  # type: ignore[index]
    for extra in extras:
        listed += meta["project"]["optional-dependencies"][extra]  # type: ignore[index]
    listed += meta["build-system"]["requires"]  # type: ignore[index]
    return [Requirement(line) for line in listed]


@pytest.mark.parametrize(("lock", "extras"), [("bot.txt", ()), ("test.txt", ("test",))])
def test_each_lock_pins_every_requirement_within_its_range(lock: str, extras: tuple[str, ...]) -> None:
    locked = pins(lock)
    for requirement in requirements(*extras):
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement} is not in requirements/{lock}: run scripts/refresh-lock"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"requirements/{lock} pins {name}=={locked[name]}, outside {requirement}: run scripts/refresh-lock"
        )


def test_the_bot_runs_the_versions_the_tests_ran() -> None:
    bot, test = pins("bot.txt"), pins("test.txt")
    assert {name: test.get(name) for name in bot} == bot
