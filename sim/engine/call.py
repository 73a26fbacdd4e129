"""A call: one generation request, the unit every engine serves."""

from __future__ import annotations

import math
from typing import Callable, Optional

from sim.engine.kvcache import Pin, Prefix


class Call:
    """One generation request: the unit the engine serves.

    ``prefix`` (a :class:`~sim.engine.kvcache.Prefix`, or None) names the call's leading KV blocks:
    calls on one replica whose prefixes give a block the same key (the N samples of one
    question, a beam's expansions, an agent session's turns, trace requests with equal prefix
    hashes) share it instead of computing and storing it again. ``retain`` says what happens
    to its keyed blocks when it ends: ``cache`` (stay cached, reclaimable), ``pin`` (held for
    the caller as ``held``, a :class:`~sim.engine.kvcache.Pin`) or ``drop`` (freed). ``pin`` is a Pin
    the call takes over and releases once admitted (the previous turn's KV).
    """

    __slots__ = (
        "call_id", "cls", "pool", "arrival_s", "prompt_tokens", "output_tokens", "priority", "job_id",
        "replica", "admitted_s", "first_token_s", "finish_s", "status", "preemptions",
        "computed", "generated", "blocks", "on_done", "prefix", "shared", "retain", "pin", "held",
        "cached_tokens", "cancelled", "energy_j", "device_s", "session_id", "pre", "kv_transfer_s",
        "done_status", "d0", "m0",
    )

    def __init__(self, call_id: int, cls: str, pool: str, arrival_s: float, prompt_tokens: int, output_tokens: int,
                 priority: int = 0, job_id: int = -1, on_done: Optional[Callable[["Call"], None]] = None,
                 prefix: Optional[Prefix] = None, retain: str = "cache", pin: Optional[Pin] = None,
                 session_id: int = -1):
        self.call_id = call_id
        self.cls = cls
        self.pool = pool
        self.arrival_s = arrival_s
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.priority = priority
        self.job_id = job_id
        self.on_done = on_done
        self.replica = -1
        self.admitted_s = math.nan
        self.first_token_s = math.nan
        self.finish_s = math.nan
        self.status = ""
        self.preemptions = 0
        self.computed = 0  # tokens whose KV is in the cache
        self.generated = 0  # output tokens sampled so far
        self.blocks = 0  # KV blocks of its context (shared ones included)
        self.prefix = prefix
        self.shared = 0  # leading blocks that are cached blocks it references (the rest are private)
        self.retain = retain
        self.pin = pin
        self.held: Optional[Pin] = None
        self.session_id = session_id
        self.cached_tokens = 0  # prompt tokens served from shared KV, over all admissions
        self.cancelled = False
        self.energy_j = 0.0  # device energy attributed to this call (its share of each iteration)
        self.device_s = 0.0  # device-seconds attributed likewise
        self.pre: Optional["Call"] = None  # disaggregation: the call that prefilled this one on another pool
        self.kv_transfer_s = 0.0  # disaggregation: time its KV cache took to arrive from the prefill replica
        self.done_status = "finished"  # status once all its tokens are out ("prefilled": a prefill-only call)
        self.d0 = 0  # running: the replica's decode clock when it was last brought up to date
        self.m0 = 0  # running: the first entry of the replica's share log it has not added

    def row(self) -> tuple:
        """Its row of the calls table, in the order of the trace's ``CALLS_SCHEMA``."""
        return (self.call_id, self.cls, self.pool, self.replica, self.job_id, self.session_id, self.priority, self.status,
                self.arrival_s, self.admitted_s, self.first_token_s, self.finish_s, self.prompt_tokens, self.output_tokens,
                self.generated, self.cached_tokens, self.preemptions, self.energy_j, self.device_s, self.kv_transfer_s)

    @property
    def remaining(self) -> int:
        """Tokens to run through the model before the next token can be sampled."""
        return self.prompt_tokens + self.generated - self.computed
