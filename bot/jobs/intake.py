"""Admissions written together: the requests that come at once are checked and charged in one transaction.

A burst of members (fifty commands in the same second) reaches the store within a few
milliseconds. Written one transaction each, every admission is three round trips (its locks,
the checked insert with its charge, the commit) on a connection of its own, and on a machine
of two cores each round trip hands the processor to the database and back. So admissions are
written the way hand-overs are (``bot.batches``): the first at once, alone; those that arrive
meanwhile together, in one transaction with one round trip for all their checked inserts
(``Store.admit_all``). Each is checked in arrival order against its member's totals with the
jobs admitted before it counted, exactly as if it had been written alone. If a group's
transaction fails, each of its admissions is written again alone, so one job's error stays its
own.
"""

from __future__ import annotations

import logging

from bot.batches import Batches
from bot.core.quota import DayUsage, Limit
from bot.core.records import AdmitOrder
from bot.store.store import MOST_ADMITTED, Store

log = logging.getLogger(__name__)

Refusal = tuple[Limit, DayUsage]


class Intake:
    """Admissions written in groups."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._groups: Batches[AdmitOrder, Refusal | None] = Batches("admissions", self._write)

    async def admit(self, order: AdmitOrder) -> Refusal | None:
        """``Store.admit`` for ``order``, written with the admissions asked meanwhile.

        A caller cancelled while its group is being written gets the outcome anyway (a job admitted for it
        is charged and held: it must reach it), and the cancellation comes back at its next wait."""
        return await self._groups.written(order)

    async def _write(self, group: list[AdmitOrder]) -> list[Refusal | Exception | None]:
        outcomes: list[Refusal | Exception | None] = []
        for start in range(0, len(group), MOST_ADMITTED):
            part = group[start : start + MOST_ADMITTED]
            try:
                outcomes.extend(await self._store.admit_all(part))
            except Exception as exc:
                if len(part) == 1:
                    outcomes.append(exc)
                    continue
                log.warning("%d admissions written together failed (%s); writing each alone", len(part), exc)
                outcomes.extend([await self._alone(order) for order in part])
        return outcomes

    async def _alone(self, order: AdmitOrder) -> Refusal | Exception | None:
        try:
            return (await self._store.admit_all([order]))[0]
        except Exception as exc:
            return exc
