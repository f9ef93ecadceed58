"""The garbage collector after start-up (``bot.ops.heap``): start-up's objects set aside, later garbage collected."""

from __future__ import annotations

import gc
import weakref

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
