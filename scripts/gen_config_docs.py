"""Write docs/configuration.md and .env.example from the settings declared in bot/config.py.

    python scripts/gen_config_docs.py           # rewrite both files
    python scripts/gen_config_docs.py --check   # exit 1, naming the file, if either differs

``bot.config.SETTINGS`` is the one list of environment variables: each with its default, what
it means, which roles act on it and its section. ``tests/test_docs.py`` runs the check, so a
setting changed in ``bot/config.py`` without running this script fails the suite.
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from pathlib import Path

from bot.config import EVERY_ROLE, SETTINGS, Section, Setting

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "configuration.md"
ENV_EXAMPLE = ROOT / ".env.example"
COMMAND = "python scripts/gen_config_docs.py"
WIDTH = 100


def sections() -> list[tuple[Section, list[Setting]]]:
    """The settings grouped by section, in the order they are declared."""
    grouped: dict[Section, list[Setting]] = {}
    for setting in SETTINGS:
        grouped.setdefault(setting.section, []).append(setting)
    return list(grouped.items())


def literal(setting: Setting) -> str | None:
    """The default when it is one literal in backticks (what ``load_config`` uses), else ``None``."""
    match = re.fullmatch(r"`([^`]*)`", setting.default)
    return match[1] if match else None


def slug(title: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def cell(text: str) -> str:
    """Text for a Markdown table cell (a bare ``|`` would end the cell, even inside backticks)."""
    return text.replace("|", "\\|")


def roles(setting: Setting) -> str:
    return "all" if setting.roles == EVERY_ROLE else ", ".join(setting.roles)


def reference() -> str:
    """docs/configuration.md."""
    lines = [
        "# Configuration",
        "",
        f"<!-- Generated from bot/config.py (SETTINGS) by `{COMMAND}`. Edit SETTINGS there, not this file. -->",
        "",
        "Atelier reads its settings from the environment, or from a `.env` file in the working directory",
        "(or the nearest one above it). [`.env.example`](../.env.example) holds every setting, commented out:",
        "copy it to `.env` and fill in the two required values.",
        "",
        "Every process reads and checks all of them when it starts. A missing or invalid value stops it",
        "with one line that names the variable and exit status 2, e.g.",
        "`atelier: configuration error: MAX_CONCURRENT_JOBS must be at least 1, got '0'`.",
        "",
        "**Used by** says which roles act on a setting: all-in-one (`python -m bot`), gateway",
        "(`python -m bot gateway`) and worker (`python -m bot worker`); see",
        "[Processes and roles](operations.md#processes-and-roles). A **secret** is kept out of `repr`,",
        "redacted from the image API's messages and scrubbed from every log line.",
        "",
    ]
    lines += [f"- [{section.title}](#{slug(section.title)})" for section, _ in sections()]
    for section, settings in sections():
        lines += ["", f"## {section.title}", ""]
        if section.intro:
            lines += [section.intro, ""]
        lines += ["| Variable | Default | Meaning | Used by |", "| --- | --- | --- | --- |"]
        for s in settings:
            name = f"`{s.name}` (secret)" if s.secret else f"`{s.name}`"
            lines.append(f"| {name} | {cell(s.default)} | {cell(s.meaning)} | {roles(s)} |")
    return "\n".join(lines) + "\n"


def comment(text: str) -> list[str]:
    """``text`` as ``#`` lines without Markdown's backticks, never breaking inside what they quoted."""
    unbroken = re.sub(r"`([^`]*)`", lambda m: m[1].replace(" ", "\0"), text)
    wrapped = textwrap.wrap(unbroken, WIDTH - 2, initial_indent="# ", subsequent_indent="# ", break_on_hyphens=False)
    return [line.replace("\0", " ") for line in wrapped]


def env_example() -> str:
    """.env.example: the required settings to fill in, then every other one commented out."""
    lines = [
        "# Atelier's settings: copy this file to .env and fill in the two required values.",
        "# Below them, each setting is commented out and shows its default or an example:",
        "# uncomment a line to change it. docs/configuration.md explains them all.",
        "#",
        f"# Generated from SETTINGS in bot/config.py by `{COMMAND}`;",
        "# edit SETTINGS there, not this file.",
    ]
    for section, settings in sections():
        lines += ["", f"# ---- {section.title} ----"]
        if section.intro:
            lines += comment(section.intro)
        for s in settings:
            lines.append("")
            shown = literal(s)
            note = ("Secret. " if s.secret else "") + s.meaning
            if s.example is not None and shown is None and s.default != "required":
                note += f" Default: {s.default}."
            lines += comment(note)
            if s.default == "required":
                lines.append(f"{s.name}=")
            else:
                lines.append(f"# {s.name}={s.example if s.example is not None else shown or ''}")
    return "\n".join(lines) + "\n"


OUTPUTS = {REFERENCE: reference, ENV_EXAMPLE: env_example}


def stale() -> list[Path]:
    """The generated files whose content differs from what this script makes."""
    return [path for path, make in OUTPUTS.items() if not path.exists() or path.read_text() != make()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file is out of date")
    args = parser.parse_args(argv)
    if args.check:
        for path in stale():
            print(f"{path.relative_to(ROOT)} is out of date with bot/config.py: run {COMMAND}", file=sys.stderr)
        return 1 if stale() else 0
    for path, make in OUTPUTS.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(make())
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
