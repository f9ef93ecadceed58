"""A fair queue: round-robin between members, first come first served within each member."""

from __future__ import annotations

from collections import deque


class FairQueue:
    """Job ids grouped by member; ``pop`` takes one job from each member in turn.

    One member's five requests therefore wait behind everyone else's first one,
    instead of holding up the whole server.
    """

    def __init__(self) -> None:
        self._by_user: dict[int, deque[str]] = {}
        self._turns: deque[int] = deque()  # members with waiting jobs, next turn first

    def __len__(self) -> int:
        return sum(len(q) for q in self._by_user.values())

    def push(self, user_id: int, job_id: str) -> None:
        """Add a job at the end of its member's line (a new member takes the last turn)."""
        if user_id not in self._by_user:
            self._by_user[user_id] = deque()
            self._turns.append(user_id)
        self._by_user[user_id].append(job_id)

    def pop(self) -> str | None:
        """The next job to run, or ``None`` when nothing waits."""
        if not self._turns:
            return None
        user_id = self._turns.popleft()
        line = self._by_user[user_id]
        job_id = line.popleft()
        if line:
            self._turns.append(user_id)
        else:
            del self._by_user[user_id]
        return job_id

    def remove(self, job_id: str) -> bool:
        """Withdraw a waiting job; ``False`` if it is not waiting."""
        for user_id, line in self._by_user.items():
            if job_id in line:
                line.remove(job_id)
                if not line:
                    del self._by_user[user_id]
                    self._turns.remove(user_id)
                return True
        return False

    def positions(self) -> dict[str, int]:
        """Each waiting job's place (1 = next) in the order ``pop`` would take them."""
        order: list[str] = []
        lines = [list(self._by_user[u]) for u in self._turns]
        depth = max((len(line) for line in lines), default=0)
        for round_ in range(depth):
            order.extend(line[round_] for line in lines if round_ < len(line))
        return {job_id: place for place, job_id in enumerate(order, start=1)}
