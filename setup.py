"""Build step: compile the gettext catalogs (``bot/locales/<lang>/LC_MESSAGES/atelier.po``) into ``.mo`` files.

The ``.po`` files are the source translators edit; the compiled ``.mo`` files are what the
bot reads and are never committed. They are written beside the ``.po`` files for an
editable install (the bot runs from the source tree) and into the build for a wheel.
Everything else about the package is in ``pyproject.toml``.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CATALOGS = Path(__file__).parent / "bot" / "locales"


class BuildWithCatalogs(build_py):
    """``build_py`` that also compiles the catalogs."""

    def run(self) -> None:
        super().run()
        from babel.messages.mofile import write_mo
        from babel.messages.pofile import read_po

        for source in sorted(CATALOGS.glob("*/LC_MESSAGES/atelier.po")):
            with source.open("rb") as handle:
                catalog = read_po(handle)
            relative = source.relative_to(Path(__file__).parent).with_suffix(".mo")
            target = Path(__file__).parent / relative if self.editable_mode else Path(self.build_lib) / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as handle:
                write_mo(handle, catalog)


setup(cmdclass={"build_py": BuildWithCatalogs})
