"""The on-prem part of the simulated cluster: nodes of G GPUs, a priority queue and EASY backfill.

Simplifications, on purpose:
- A job asks for `nodes` nodes with `gpus_per_node` free GPUs each; nodes are shared between jobs
  (Slurm's cons_tres), GPUs are the only resource (no CPUs, memory or topology).
- Placement is best fit: the nodes with the fewest free GPUs that still fit, which keeps whole
  nodes free for the large jobs.
- Priority is submit order (no fair share, QOS or age factors). The first waiting job gets a
  reservation (EASY backfill); a later job may start now if it fits and either ends, by its
  estimate, before that reservation, or leaves the head job room at the reservation time. The
  estimate is the time limit, else the real duration (a perfect user estimate).
- Backfill is evaluated whenever the cluster changes, not on Slurm's bf_interval, and tests
  every waiting job (no bf_max_job_test).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from itertools import islice
from typing import Callable

INF = float("inf")
_BLOCK = 64                 # jobs per block of a shape queue: the block keeps its shortest estimate


class Nodes:
    """Free GPUs per node, indexed so `fits` is one lookup and best fit touches few nodes."""

    def __init__(self, count: int, gpus_per_node: int):
        self.count, self.size = count, gpus_per_node
        self.free = [gpus_per_node] * count
        self.at_least = [count] * (gpus_per_node + 1)        # [k]: nodes with >= k free GPUs
        self.exactly: list[dict[int, None]] = [{} for _ in range(gpus_per_node + 1)]
        self.exactly[gpus_per_node] = dict.fromkeys(range(count))   # dicts: ordered, so runs repeat

    def fits(self, gpn: int, n: int) -> bool:
        return gpn <= self.size and self.at_least[gpn] >= n

    def most_free(self) -> int:
        for k in range(self.size, 0, -1):
            if self.at_least[k]:
                return k
        return 0

    def choose(self, gpn: int, n: int) -> list[int]:
        """Best fit: N nodes with at least GPN free GPUs, the fullest first. Call only when it fits."""
        out: list[int] = []
        for k in range(gpn, self.size + 1):
            out.extend(islice(self.exactly[k], n - len(out)))
            if len(out) == n:
                return out
        raise AssertionError("choose() called for a job that does not fit")

    def take(self, nodes: list[int], gpn: int) -> None:
        for node in nodes:
            self._move(node, -gpn)

    def give(self, nodes: list[int], gpn: int) -> None:
        for node in nodes:
            self._move(node, gpn)

    def _move(self, node: int, delta: int) -> None:
        before = self.free[node]
        after = before + delta
        self.free[node] = after
        del self.exactly[before][node]
        self.exactly[after][node] = None
        step = 1 if delta > 0 else -1
        for k in range(min(before, after) + 1, max(before, after) + 1):
            self.at_least[k] += step


class ShapeQueue:
    """Waiting jobs of one shape, in priority order, with the shortest estimate of each block of 64.

    A job leaves by being marked gone; `first_short` skips whole blocks whose shortest estimate is
    too long, so a backfill query over thousands of long jobs touches a few blocks, not every job.
    """

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.est: list[float] = []
        self.block_min: list[float] = []
        self.head = 0
        self.live = 0

    def push(self, idx: int, est: float) -> int:
        pos = len(self.ids)
        self.ids.append(idx)
        self.est.append(est)
        if pos % _BLOCK == 0:
            self.block_min.append(est)
        elif est < self.block_min[-1]:
            self.block_min[-1] = est
        self.live += 1
        return pos

    def remove(self, pos: int) -> None:
        gone = self.est[pos]
        self.ids[pos], self.est[pos] = -1, INF
        self.live -= 1
        b = pos // _BLOCK
        if self.block_min[b] == gone:
            self.block_min[b] = min(self.est[b * _BLOCK:(b + 1) * _BLOCK])

    def first(self, skip: int) -> int:
        """Position of the first job other than SKIP, or -1."""
        ids = self.ids
        while self.head < len(ids) and ids[self.head] < 0:
            self.head += 1
        for pos in range(self.head, len(ids)):
            if ids[pos] >= 0 and ids[pos] != skip:
                return pos
        return -1

    def first_short(self, limit: float, skip: int) -> int:
        """Position of the first job other than SKIP whose estimate is at most LIMIT, or -1."""
        ids, est = self.ids, self.est
        for b in range(self.head // _BLOCK, len(self.block_min)):
            if self.block_min[b] > limit:
                continue
            for pos in range(max(b * _BLOCK, self.head), min((b + 1) * _BLOCK, len(ids))):
                if est[pos] <= limit and ids[pos] != skip:
                    return pos
        return -1


@dataclass
class _Reservation:
    """The head job's reservation: when it can start, and each node's free GPUs then."""

    head: int
    version: int
    at: float
    free: list[int]
    at_least_head: int          # nodes with at least the head's GPUs per node free at `at`



Start = Callable[[int, list[int]], None]


class OnPrem:
    """On-prem nodes and the queue of jobs waiting for them.

    Jobs are indices into the engine's arrays GPN (GPUs per node), NNODES and EST (estimated run
    time). `schedule` calls `start(idx, nodes)` for every job it starts; the job has then already
    left the queue.
    """

    def __init__(self, nodes: Nodes, gpn: list[int], nnodes: list[int], est: list[float]):
        self.nodes, self.gpn, self.nnodes, self.est = nodes, gpn, nnodes, est
        self.order: list[int] = []                  # every job ever queued, in priority order
        self.queues: dict[tuple[int, int], ShapeQueue] = {}
        self.where: dict[int, int] = {}             # waiting job -> its position in its shape queue
        self.running: list[tuple[float, int]] = []  # (estimated end, job), sorted
        self.placed: dict[int, tuple[float, list[int]]] = {}
        self._head_at = 0
        self._version = 0                           # bumped when the running set ends earlier than assumed
        self._reservation: _Reservation | None = None
        self._fresh: list[int] = []                 # queued since the last backfill
        self._changed = True                        # GPUs freed since the last backfill
        self._last_head: int | None = None

    def can_ever_fit(self, idx: int) -> bool:
        return self.gpn[idx] <= self.nodes.size and self.nnodes[idx] <= self.nodes.count

    def push(self, idx: int) -> None:
        shape = (self.gpn[idx], self.nnodes[idx])
        queue = self.queues.get(shape)
        if queue is None:
            queue = self.queues[shape] = ShapeQueue()
        self.where[idx] = queue.push(idx, self.est[idx])
        self.order.append(idx)
        self._fresh.append(idx)

    def remove(self, idx: int) -> None:
        """IDX leaves the queue without starting here (it started in the cloud)."""
        self.queues[(self.gpn[idx], self.nnodes[idx])].remove(self.where.pop(idx))

    def head(self) -> int | None:
        order, where = self.order, self.where
        while self._head_at < len(order) and order[self._head_at] not in where:
            self._head_at += 1
        return order[self._head_at] if self._head_at < len(order) else None

    def release(self, idx: int, now: float) -> None:
        est_end, nodes = self.placed.pop(idx)
        del self.running[bisect.bisect_left(self.running, (est_end, idx))]
        self.nodes.give(nodes, self.gpn[idx])
        if now < est_end:
            self._version += 1
        self._changed = True

    def schedule(self, now: float, start: Start) -> None:
        """Start what can start now: jobs in priority order while they fit, then backfill."""
        while (head := self.head()) is not None:
            gpn, n = self.gpn[head], self.nnodes[head]
            if not self.nodes.fits(gpn, n):
                break
            self._start(head, self.nodes.choose(gpn, n), now, start)
        if head is not None:
            r = self._reservation
            if self._changed or head != self._last_head or r is None or r.at < now:
                self._backfill(now, head, start)
            elif self._fresh:
                # Nothing freed and the same head: the jobs tested last time still cannot start,
                # so only the newly queued ones (all later in priority) need a look.
                self._backfill_fresh(now, head, start)
        self._last_head = head
        self._fresh.clear()
        self._changed = False

    def _start(self, idx: int, nodes: list[int], now: float, start: Start) -> None:
        self.remove(idx)
        self.nodes.take(nodes, self.gpn[idx])
        est_end = now + self.est[idx]
        bisect.insort(self.running, (est_end, idx))
        self.placed[idx] = (est_end, nodes)
        start(idx, nodes)

    def _reserve(self, now: float, head: int) -> _Reservation:
        """When HEAD can start if running jobs end as estimated, and the free GPUs then."""
        r = self._reservation
        if r is not None and r.head == head and r.version == self._version and r.at >= now:
            return r
        hg, hn = self.gpn[head], self.nnodes[head]
        free = self.nodes.free[:]
        count = self.nodes.at_least[hg]
        at = INF
        for est_end, idx in self.running:
            g = self.gpn[idx]
            for node in self.placed[idx][1]:
                before = free[node]
                free[node] = before + g
                if before < hg <= before + g:
                    count += 1
            if count >= hn:
                at = max(est_end, now)
                break
        self._reservation = _Reservation(head, self._version, at, free, count)
        return self._reservation

    def expected_start(self, now: float) -> tuple[int, float] | None:
        """(job, when) for the job first in line, as Slurm's backfill estimates it from the running jobs'
        time limits; None when nothing waits or it can never start here."""
        head = self.head()
        if head is None:
            return None
        at = self._reserve(now, head).at
        return None if at == INF else (head, at)

    def _backfill(self, now: float, head: int, start: Start) -> None:
        r = self._reserve(now, head)
        while True:
            most = self.nodes.most_free()
            best: tuple[int, list[int]] | None = None
            for (gpn, n), queue in self.queues.items():
                if queue.live == 0 or gpn > most or not self.nodes.fits(gpn, n):
                    continue
                nodes = self.nodes.choose(gpn, n)
                if self._leaves_room(r, head, nodes, gpn):
                    pos = queue.first(head)
                else:
                    pos = queue.first_short(r.at - now, head)
                if pos >= 0 and (best is None or queue.ids[pos] < best[0]):
                    best = (queue.ids[pos], nodes)
            if best is None:
                return
            self._backfill_one(now, best[0], best[1], r, head, start)

    def _backfill_fresh(self, now: float, head: int, start: Start) -> None:
        r = self._reserve(now, head)
        for idx in self._fresh:
            gpn, n = self.gpn[idx], self.nnodes[idx]
            if idx == head or idx not in self.where or not self.nodes.fits(gpn, n):
                continue
            nodes = self.nodes.choose(gpn, n)
            if now + self.est[idx] <= r.at or self._leaves_room(r, head, nodes, gpn):
                self._backfill_one(now, idx, nodes, r, head, start)

    def _backfill_one(self, now: float, idx: int, nodes: list[int], r: _Reservation, head: int,
                      start: Start) -> None:
        self._start(idx, nodes, now, start)
        if now + self.est[idx] > r.at:      # still running at the reservation: it holds its GPUs then
            gpn, hg = self.gpn[idx], self.gpn[head]
            for node in nodes:
                before = r.free[node]
                r.free[node] = before - gpn
                if before - gpn < hg <= before:
                    r.at_least_head -= 1

    def _leaves_room(self, r: _Reservation, head: int, nodes: list[int], gpn: int) -> bool:
        """Would HEAD still fit at its reservation if a job held GPN GPUs on NODES past it?"""
        hg = self.gpn[head]
        lost = sum(1 for node in nodes if r.free[node] - gpn < hg <= r.free[node])
        return r.at_least_head - lost >= self.nnodes[head]
