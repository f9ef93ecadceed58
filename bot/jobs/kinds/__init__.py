"""Job kinds, by name: what a job does. The engine runs a job by its kind's name, as arq runs a function by its
name; queue, money, fairness, limits, delivery, Refine, Reroll, history and ETA never look inside a kind.

A new kind is one module with a ``JobKind`` and one line here.
"""

from __future__ import annotations

from collections.abc import Mapping

from bot.jobs.kinds.base import JobKind, UnknownKindError
from bot.jobs.kinds.edit import EDIT
from bot.jobs.kinds.imagine import IMAGINE
from bot.jobs.kinds.region import REGION

KINDS: Mapping[str, JobKind] = {kind.name: kind for kind in (EDIT, IMAGINE, REGION)}


def kind_of(name: str) -> JobKind:
    """The kind called ``name``; ``UnknownKindError`` for a job of a kind this version does not know."""
    try:
        return KINDS[name]
    except KeyError:
        raise UnknownKindError(name) from None


__all__ = ["KINDS", "JobKind", "UnknownKindError", "kind_of"]
