"""Same-instant ordering in SimPy: the engine's few uses of SimPy's private scheduling fields.

Calls often arrive at the instant a replica decides its next run (a closed-loop client sends its
next call as its previous one finishes). The replica then puts its decision off to one event
processed after every other event of the instant, and gives its boundary event the place in
SimPy's same-time order that deciding at once would have given it, so the tables do not change.
SimPy orders the events of one instant by priority, then by an id taken from ``env._eid``; this
module is the only place that touches ``env._eid`` and ``env._queue``.
"""

from __future__ import annotations

import heapq
from typing import Optional

from simpy.events import NORMAL, URGENT, Event  # noqa: F401 (URGENT: for callers)

# SimPy (pinned) orders the events of one instant by priority, then by an id taken from
# ``env._eid`` when each is scheduled; the engine reserves ids and uses a priority below
# every ordinary event's for decisions put off to the end of an instant.
END_OF_INSTANT = NORMAL + 1


def event_id(env) -> int:
    """Take the next event id from the environment (the same-time order of scheduling)."""
    return next(env._eid)


def triggered(env) -> Event:
    ev = Event(env)
    ev._ok, ev._value = True, None
    return ev


def timeout_in_slot(env, delay: float, eid: int) -> Event:
    """A timeout that ranks among the events of its instant as if scheduled when ``eid`` was taken."""
    ev = triggered(env)
    heapq.heappush(env._queue, (env.now + delay, NORMAL, eid, ev))
    return ev


class Wake:
    """A wake-up at a set time with its callbacks, ``callback(wake)``: all that SimPy's loop
    reads of an event it processes (``callbacks``, then ``_ok``), without an Event's set-up.
    It is scheduled and ranked exactly as a timeout made at the same moment would be
    (:func:`wake_at`); ``tag`` is the caller's (which arming of the replica it is).
    ``callbacks`` is a tuple (SimPy only iterates it): a caller waking the same callback
    again and again passes the same one (:func:`wake_calls`)."""

    __slots__ = ("callbacks", "_ok", "tag")

    def __init__(self, callbacks: tuple, tag):
        self.callbacks: Optional[tuple] = callbacks  # (SimPy sets it to None once processed)
        self._ok = True
        self.tag = tag


def wake_at(env, t: float, eid: Optional[int], callback, tag, priority: int = NORMAL) -> Wake:
    """Schedule ``callback(wake)`` at ``t`` (not before now), ranked among the events of its
    instant as a timeout scheduled when ``eid`` was taken (None: now), with the time such a
    timeout gets (``env.now + delay``: the same float); ``priority``: SimPy's (URGENT ranks
    it as a process's start)."""
    now = env._now
    delay = t - now
    w = Wake((callback,), tag)
    heapq.heappush(env._queue, (now + delay if delay > 0 else now + 0.0, priority,
                                next(env._eid) if eid is None else eid, w))
    return w


def wake_calls(env, t: float, eid: Optional[int], callbacks: tuple, tag, priority: int = NORMAL) -> None:
    """:func:`wake_at` with the callbacks given as a tuple the caller keeps (no tuple per wake-up)."""
    now = env._now
    delay = t - now
    heapq.heappush(env._queue, (now + delay if delay > 0 else now + 0.0, priority,
                                next(env._eid) if eid is None else eid, Wake(callbacks, tag)))


def instant_over(env) -> bool:
    """Whether nothing else is scheduled at the current instant (``env.peek() > env.now``)."""
    q = env._queue
    return not q or q[0][0] > env._now


def at_end_of_instant(env) -> Event:
    """An event processed after every ordinary event of the current instant, even those
    scheduled after it (by processing other events of the instant)."""
    ev = triggered(env)
    env.schedule(ev, END_OF_INSTANT)
    return ev


class Due:
    """A decision put off to the end of the current instant.

    Deciding at once, the replica would re-decide at every call arriving at this
    instant and schedule its boundary event at the last re-decision. Which
    arrival that is follows from the final decision alone (the arrivals only
    join the queue, so every intermediate decision has the same running part,
    and the same head of the queue once it holds a call): a steady run of
    ``k > 1`` iterations means the queue's head could not be admitted, so only
    the first arrival re-decided, and only if the queue was empty and a seat
    free; any other decision was re-made at every arrival. ``origin``, ``first``
    and ``last`` are SimPy event ids taken at those moments: the boundary event
    scheduled under one of them ranks among the events of its own instant (SimPy
    orders them by id) as deciding at once would have ranked it.
    """

    __slots__ = ("origin", "waiting_empty", "first", "last")

    def __init__(self, origin: int, waiting_empty: bool):
        self.origin = origin  # the moment the decision fell due
        self.waiting_empty = waiting_empty  # queue empty at that moment
        self.first: Optional[int] = None  # the first call that arrived after it
        self.last: Optional[int] = None  # the latest one

    def arrived(self, eid: int) -> None:
        if self.first is None:
            self.first = eid
        self.last = eid

    def slot(self, plan, seat_free: bool) -> int:
        """Event id under which deciding at once would have scheduled ``plan``'s boundary."""
        if plan.steady and plan.k > 1:
            return self.first if self.first is not None and self.waiting_empty and seat_free else self.origin
        return self.last if self.last is not None else self.origin
