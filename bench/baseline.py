"""Another checkout of the bot (``--baseline PATH``), run by the same measures in the same run.

The older code runs as ``python -m bot`` from its own tree with this virtualenv's packages
(its dependencies are the same ones). Two things an install would have done for it are done here:

- **its frontends.** ``python -m bot`` finds its Discord side through the ``atelier.frontends``
  entry points, and the installed ones name this checkout's modules (``cogs.frontends``). A
  metadata directory holding the older tree's own entry points goes on ``PYTHONPATH`` after
  the tree; ``importlib.metadata`` takes the first distribution of a name on the path, so the
  older bot finds its own classes;
- **its catalogs.** The ``.mo`` files are compiled at install time and never committed; a
  checkout without them gets them compiled beside its ``.po`` files, as its ``setup.py`` would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from bench.common import Code


def prepare(tree: Path, scratch: Path) -> Code:
    """The ``Code`` that runs the bot in ``tree`` (its metadata written under ``scratch``, kept for the run)."""
    tree = tree.resolve()
    if not (tree / "bot" / "__main__.py").is_file():
        raise SystemExit(f"--baseline {tree}: not a checkout of the bot (no bot/__main__.py)")
    project = tomllib.loads((tree / "pyproject.toml").read_text())["project"]
    frontends = project.get("entry-points", {}).get("atelier.frontends", {})
    info = scratch / f"{project['name']}-{project['version']}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    lines = ["[atelier.frontends]", *(f"{name} = {target}" for name, target in frontends.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    compile_catalogs(tree)
    code = Code(label=f"baseline, {label(tree)}", pythonpath=os.pathsep.join([str(tree), str(scratch)]))
    check(code, tree, scratch, frontends)
    return code


def check(code: Code, tree: Path, scratch: Path, frontends: dict[str, str]) -> None:
    """Fail at once unless a process started as the bench starts the bot imports ``tree``'s bot and frontends."""
    probe = (
        "import json, bot, importlib.metadata as m; "
        "print(json.dumps([bot.__file__, {e.name: e.value for e in m.entry_points(group='atelier.frontends')}]))"
    )
    assert code.pythonpath is not None
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=scratch, env={**os.environ, "PYTHONPATH": code.pythonpath},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"--baseline {tree}: its bot does not import here:\n{done.stderr[-2000:]}")
    module, found = json.loads(done.stdout)
    if not Path(module).resolve().is_relative_to(tree) or found != frontends:
        raise SystemExit(f"--baseline {tree}: a process would run {module} with frontends {found}, not the tree's")


def compile_catalogs(tree: Path) -> None:
    """Compile each ``.po`` of ``tree`` that has no ``.mo`` yet (the build step an install runs)."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    for source in sorted((tree / "bot" / "locales").glob("*/LC_MESSAGES/*.po")):
        target = source.with_suffix(".mo")
        if target.exists():
            continue
        with source.open("rb") as handle:
            catalog = read_po(handle)
        with target.open("wb") as handle:
            write_mo(handle, catalog)


def label(tree: Path) -> str:
    """The tree's commit, short (a ``git worktree`` or clone), else its directory's name (a ``git archive``)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return tree.name
    # A tree extracted inside another repository would report that repository's commit: only trust a top level.
    top = subprocess.run(["git", "-C", str(tree), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if done.returncode == 0 and top.returncode == 0 and Path(top.stdout.strip()).resolve() == tree:
        return done.stdout.strip()
    return tree.name
