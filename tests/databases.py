"""Which database a test of the bot runs on.

``bot_env`` (in ``conftest``) runs every test of the bot on both, ids ``[sqlite]`` and ``[postgres]``.
A test about one database by nature names it with ``@only_sqlite`` or ``@only_postgres``, and its
docstring says why.
"""

from __future__ import annotations

import pytest

DATABASES = ("sqlite", "postgres")

only_sqlite = pytest.mark.parametrize("bot_env", ["sqlite"], indirect=True)
only_postgres = pytest.mark.parametrize("bot_env", ["postgres"], indirect=True)
