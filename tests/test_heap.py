"""The garbage collector after start-up (``bot.ops.heap``): start-up's objects set aside, later garbage collected."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from bot.ops import heap


class Node:
    """An object that can sit in a reference cycle."""

    def __init__(self) -> None:
        self.me: Node | None = None


def test_settling_sets_start_up_objects_aside_and_later_cycles_are_still_collected() -> None:
    """A full collection walked a worker's 70,000 start-up objects every time (about 30 ms of a stopped event
    loop); set aside, they are walked no more. A cycle made afterwards is still found and freed."""
    try:
        heap.settle()
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # the modules, classes and functions imported so far
        node = Node()
        node.me = node
        gone = weakref.ref(node)
        del node
        gc.collect()
        assert gone() is None
        assert gc.get_freeze_count() == frozen  # a collection leaves the objects set aside where they are
    finally:
        gc.unfreeze()  # the rest of this test process collects as usual


async def test_the_heap_settles_again_at_a_quiet_moment_and_frees_the_cycles_set_aside() -> None:
    """A gateway's jobs and status lines are set aside too, so that its full collections stop walking them; a cycle
    among them that ended meanwhile is freed at the next settling, which waits for a quiet moment."""
    try:
        node = Node()
        node.me = node
        gone = weakref.ref(node)
        heap.settle()  # the node lives: set aside
        del node
        gc.collect()
        assert gone() is not None  # an ordinary collection does not walk what was set aside
        quiet_asked: list[bool] = []
        slept: list[float] = []

        async def quiet() -> None:
            quiet_asked.append(gone() is not None)  # asked before the settling

        async def sleep(seconds: float) -> None:
            slept.append(seconds)
            if len(slept) == 2:
                raise asyncio.CancelledError  # the process stops after one settling

        with pytest.raises(asyncio.CancelledError):
            await heap.keep_settled(quiet, every=60.0, sleep=sleep)
        assert slept == [60.0, 60.0] and quiet_asked == [True]
        assert gone() is None
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
