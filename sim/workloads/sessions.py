"""Agent sessions: stateful processes that call the model, wait on tools, and call again
with a longer context, and what happens to their KV cache in between.

A session class (a workload class with ``session:``) starts :class:`Session` s at its
arrival times (or keeps ``concurrency`` of them running in a closed loop). Each session
is a SimPy process. A turn is one call whose prompt is the whole history (first prompt,
every earlier output, every tool result) and whose blocks are keyed by the session, so
the replica's prefix cache can serve the history again. Between turns the KV policy acts:

* ``drop``: the turn's blocks are freed; the next turn prefills the whole history;
* ``lru``: they stay in the prefix cache, reclaimable, and the next turn reuses whatever
  other traffic has not reclaimed;
* ``pin``: the session holds them on the device (they count against the pool and hold
  back admissions) until its next turn is admitted, or ``ttl_s`` passes;
* ``offload``: they are copied to the host's memory as well; the next turn first reloads
  the blocks the device lost, taking bytes / bandwidth, then runs.

Turns stay on the replica that holds the session's KV (affinity) unless its KV load is
above ``affinity_max_load``; then the pool's router picks another replica and the KV on
the old one is given up.

The defaults below are derived (figures only; the data is GPL-2.0 and is not shipped) from
real coding-agent sessions: AgentCgroup's SWE-bench traces (github.com/yunwei37/agentcgroup,
commit 5af9e7b, 111 sessions of the Claude Code harness driving GLM-4.7-Flash, 5,643 model
calls, 6,641 tool calls).
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict

import numpy as np

from sim import config as C
from sim import rng as R
from sim.engine.kvcache import Prefix
from sim.output.summary import session_metrics
from sim.output.trace import SESSIONS_SCHEMA
from sim.workloads.arrivals import LengthSampler
from sim.workloads.kind import WorkloadKind, fires

# AgentCgroup local-model sessions (llm_calls.csv / tool_calls.csv of the shared data):
# model calls per session p50 46, p90 92 -> lognormal median 46, sigma ln(92/46)/1.2816.
DEFAULT_TURNS = C.LognormalLength(kind="lognormal", median=46, sigma=0.54, max=400)
# output tokens per call p50 144, p90 600 (mean 258).
DEFAULT_OUTPUT = C.LognormalLength(kind="lognormal", median=144, sigma=1.11, max=8192)
# context growth per turn beyond the previous output (tool results, new input): p50 180, p90 1,201
# (a quarter of the steps shrink the context: the harness compacts it; not modelled).
DEFAULT_GROWTH = C.LognormalLength(kind="lognormal", median=180, sigma=1.48, max=32768)
# tool calls per model call: 84% one, 11% two, 2% three, 2% none (mean 1.15).
DEFAULT_TOOLS_PER_TURN = C.EmpiricalLength(kind="empirical", values=[1, 2, 3, 4], weights=[0.86, 0.115, 0.021, 0.004])
# tool mix and latency (lognormal through p50 and p90 of each tool's durations):
DEFAULT_TOOLS = [
    C.Tool(name="bash", weight=0.50, latency_s=C.LognormalTime(kind="lognormal", median=6.5, sigma=0.40, max=600)),
    C.Tool(name="read", weight=0.19, latency_s=C.LognormalTime(kind="lognormal", median=0.013, sigma=0.88)),
    C.Tool(name="edit", weight=0.10, latency_s=C.LognormalTime(kind="lognormal", median=0.024, sigma=0.57)),
    C.Tool(name="grep", weight=0.08, latency_s=C.LognormalTime(kind="lognormal", median=0.023, sigma=0.61)),
    C.Tool(name="todo", weight=0.08, latency_s=C.LognormalTime(kind="lognormal", median=0.013, sigma=0.88)),
    C.Tool(name="glob", weight=0.04, latency_s=C.LognormalTime(kind="lognormal", median=0.027, sigma=0.48)),
    C.Tool(name="write", weight=0.01, latency_s=C.LognormalTime(kind="lognormal", median=0.026, sigma=0.51)),
]
# first prompt (system prompt and task) of those sessions: p50 13,385 tokens (use as prompt_tokens).
DEFAULT_FIRST_PROMPT_TOKENS = 13385

# A session's history is cached in chunks of 16 blocks (256 tokens at vLLM's block size, LMCache's
# default chunk): the part of the last chunk that is not full is computed again next turn.
SESSION_CHUNK_BLOCKS = 16

# purposes of a session's sub-streams
_TURNS, _OUTPUT, _GROWTH, _TOOLS, _THINK = range(5)


def _time(dist, rng: np.random.Generator) -> float:
    """One duration in seconds from a time distribution: the value ``_times(dist, rng, 1)[0]``
    gives, drawn the same way (a scalar draw of a numpy Generator is its one-element draw)."""
    if isinstance(dist, C.FixedTime):
        return float(dist.value)
    if isinstance(dist, C.ExponentialTime):
        return float(rng.exponential(dist.mean))
    if isinstance(dist, C.UniformTime):
        return float(rng.uniform(dist.low, dist.high))
    x = float(rng.lognormal(math.log(dist.median), dist.sigma))
    return (x if x <= dist.max else float(dist.max)) if dist.max else x


def _times(dist, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` durations in seconds from a time distribution."""
    if isinstance(dist, C.FixedTime):
        return np.full(n, dist.value)
    if isinstance(dist, C.ExponentialTime):
        return rng.exponential(dist.mean, size=n)
    if isinstance(dist, C.UniformTime):
        return rng.uniform(dist.low, dist.high, size=n)
    x = rng.lognormal(math.log(dist.median), dist.sigma, size=n)
    return np.minimum(x, dist.max) if dist.max else x


class HostTier:
    """Host memory of one replica holding offloaded sessions' KV, least recently used out."""

    def __init__(self, capacity_blocks: int):
        self.capacity = capacity_blocks
        self.used = 0
        self.held: OrderedDict = OrderedDict()  # session id -> blocks

    def put(self, sid: int, blocks: int) -> list[int]:
        """Store (or refresh) a session's blocks; returns the sessions evicted to make room."""
        self.used -= self.held.pop(sid, 0)
        evicted = []
        while self.used + blocks > self.capacity and self.held:
            old, n = self.held.popitem(last=False)
            self.used -= n
            evicted.append(old)
        if blocks <= self.capacity:
            self.held[sid] = blocks
            self.used += blocks
        return evicted

    def get(self, sid: int) -> int:
        return self.held.get(sid, 0)

    def drop(self, sid: int) -> None:
        self.used -= self.held.pop(sid, 0)


class Session:
    """One agent session in flight and what it has measured so far."""

    __slots__ = ("sid", "index", "arrival_s", "first_prompt", "on_done", "streams", "status", "finish_s", "turns",
                 "turns_done", "ttfts", "tool_s", "llm_s", "prompt_tokens", "output_tokens", "cached_tokens",
                 "recomputed_tokens", "reload_s", "device_block_s", "host_block_s", "pinned_block_s", "calls",
                 "migrations", "home", "pin", "pin_since", "host_since", "host_blocks", "history_blocks")

    def __init__(self, sid: int, index: int, arrival_s: float, first_prompt: int, on_done, streams):
        self.sid, self.index, self.arrival_s, self.first_prompt = sid, index, arrival_s, first_prompt
        self.on_done, self.streams = on_done, streams
        self.status = ""
        self.finish_s = math.nan
        self.turns = self.turns_done = 0
        self.ttfts: list[float] = []
        self.tool_s = self.llm_s = self.reload_s = 0.0
        self.prompt_tokens = self.output_tokens = self.cached_tokens = self.recomputed_tokens = 0
        self.device_block_s = self.host_block_s = self.pinned_block_s = 0.0
        self.calls = []
        self.migrations = 0
        self.home = None  # replica holding its KV
        self.pin = None  # Pin on home while waiting between turns
        self.pin_since = 0.0
        self.host_since = 0.0
        self.host_blocks = 0  # blocks of it on home's host tier
        self.history_blocks = 0  # full blocks of the history computed so far


class SessionClass:
    """Runs the sessions of one workload class (SimPy glue)."""

    def __init__(self, world, cls: C.WorkloadClass, kind: "SessionKind"):
        sc = world.scenario
        self.world, self.env, self.cls, self.kind = world, world.env, cls, kind
        spec = self.spec = cls.session
        self.key = f"workload.classes.{cls.name}.session"
        self._seed = (sc.seed, sc.run, f"sessions/{cls.name}")
        base, key = sc.base_dir, self.key
        dummy = R.stream(sc.seed, sc.run, f"sessions/{cls.name}/unused")
        self.turns = LengthSampler(spec.turns or DEFAULT_TURNS, dummy, base, f"{key}.turns")
        self.output = LengthSampler(spec.output_tokens or DEFAULT_OUTPUT, dummy, base, f"{key}.output_tokens")
        self.growth = LengthSampler(spec.context_growth_tokens or DEFAULT_GROWTH, dummy, base, f"{key}.context_growth_tokens")
        self.per_turn = LengthSampler(spec.tool_calls_per_turn or DEFAULT_TOOLS_PER_TURN, dummy, base,
                                      f"{key}.tool_calls_per_turn")
        self.tools = spec.tools or DEFAULT_TOOLS
        w = np.array([t.weight for t in self.tools], dtype=float)
        self.tool_cum = np.cumsum(w / w.sum())
        self._tool_cum = self.tool_cum.tolist()
        self.policy = spec.kv
        # what a turn's call does with its KV when it ends
        self.retain = {"pin": "pin", "drop": "drop"}.get(spec.kv.kind, "cache")
        self.pool = world.spec_by_name[cls.pool]
        per_token = self.pool.kv_gib * 2**30 / (self.pool.kv_blocks * self.pool.block_size)
        self.block_bytes = per_token * self.pool.block_size * self.pool.devices_per_replica  # whole replica
        self.hosts: dict = {}  # replica index -> HostTier (offload policy)
        self.started = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self, t: float, prompt: int, on_done=None) -> Session:
        index = self.started
        self.started += 1
        seed, run, name = self._seed
        streams = [R.stream(seed, run, name, index, purpose) for purpose in range(5)]
        s = Session(self.kind.new_id(), index, t, prompt, on_done, streams)
        self.kind.open[s.sid] = (self, s)
        self.env.process(self._run(s))
        return s

    def _run(self, s: Session):
        env, spec, bs = self.env, self.spec, self.pool.block_size
        st = s.streams
        s.turns = int(self.turns.sample(1, st[_TURNS])[0])
        outputs = self.output.sample(s.turns, st[_OUTPUT])
        growth = self.growth.sample(s.turns, st[_GROWTH])
        # the session's own chain, one turn at a time: its running turn decodes on the replica's
        # decode clock, registering the chunks it fills when it next registers
        prefix = Prefix(("session", s.sid), chunk=SESSION_CHUNK_BLOCKS, solo=True)
        prompt = s.first_prompt
        for turn in range(s.turns):
            replica = self._place(s, prompt + int(outputs[turn]))
            pin = yield from self._bring_back(s, replica, prefix)
            ev = env.event()
            call = self.world.submit_to(self.cls.pool, replica, self.cls.name, env.now, prompt, int(outputs[turn]),
                                        self.cls.priority, -1, fires(ev), prefix, retain=self.retain, pin=pin,
                                        session_id=s.sid)
            s.calls.append(call)
            yield ev
            self._account_call(s, call, prompt)
            if call.status != "finished":
                s.status = "failed" if call.status == "dropped" else call.status
                break
            s.turns_done += 1
            s.history_blocks = (prompt + call.generated) // bs
            self._keep(s, replica, call)
            if turn == s.turns - 1:
                break
            wait = self._tool_time(s, turn) + _time(spec.think_s, st[_THINK])
            s.tool_s += wait
            if isinstance(self.policy, C.PinKv) and self.policy.ttl_s is not None and wait > self.policy.ttl_s:
                yield env.timeout(self.policy.ttl_s)
                self._unpin(s)
                yield env.timeout(wait - self.policy.ttl_s)
            else:
                yield env.timeout(wait)
            prompt = prompt + int(call.generated) + int(growth[turn])
        if not s.status:
            s.status = "finished"
        s.finish_s = env.now
        self.end(s)

    def end(self, s: Session) -> None:
        """Let go of what the session holds and record it."""
        self._unpin(s)
        if s.host_blocks:
            s.host_block_s += s.host_blocks * (self.env.now - s.host_since)
            self.hosts[s.home.index].drop(s.sid)
            s.host_blocks = 0
        self.kind.record(self, s)
        if s.on_done is not None:
            s.on_done(s)

    # ------------------------------------------------------------------ placement and KV
    def _place(self, s: Session, tokens: int):
        """The replica for the next turn: home while its KV load allows, else the router's pick."""
        home = s.home
        if (home is not None and home.down_since is None and not home.draining and self.spec.affinity
                and home.kv_load(self.env.now) <= self.spec.affinity_max_load):
            return home
        probe = _Probe(tokens, self.env.now)
        r = self.world.route(self.cls.pool, probe)
        if r is None:  # the whole pool is down: wait for the old home
            return home
        if home is not None and r is not home:  # the KV on the old home is given up
            s.migrations += 1
            self._unpin(s)
            if s.host_blocks:
                s.host_block_s += s.host_blocks * (self.env.now - s.host_since)
                self.hosts[home.index].drop(s.sid)
                s.host_blocks = 0
        s.home = r
        return r

    def _bring_back(self, s: Session, replica, prefix: Prefix):
        """The pin the next turn takes over: the held KV (pin policy), or the blocks reloaded
        from host memory (offload policy), after the reload time."""
        if s.pin is not None:
            s.pinned_block_s += s.pin.blocks * (self.env.now - s.pin_since)
            pin, s.pin = s.pin, None
            return pin
        if not (isinstance(self.policy, C.OffloadKv) and s.host_blocks) or replica is None or replica.down_since is not None:
            return None
        kv = replica.kv
        replica.settle()  # the pool as it is now, not as the run in flight began
        missing = kv.missing(prefix, s.host_blocks)
        s.host_block_s += s.host_blocks * (self.env.now - s.host_since)
        blocks = s.host_blocks
        self.hosts[replica.index].drop(s.sid)
        s.host_blocks = 0
        if missing:
            t = missing * self.block_bytes / (self.policy.bandwidth_gb_s * 1e9)
            s.reload_s += t
            yield self.env.timeout(t)
        return replica.restore(prefix, blocks)

    def _keep(self, s: Session, replica, call) -> None:
        """After a turn: hold the pinned KV, or copy it to host memory."""
        if call.held is not None:
            s.pin, s.pin_since = call.held, self.env.now
            call.held = None
        if isinstance(self.policy, C.OffloadKv) and s.history_blocks:
            host = self.hosts.get(replica.index)
            if host is None:
                host = self.hosts[replica.index] = HostTier(int(self.policy.host_gib * 2**30 // self.block_bytes))
            for sid in host.put(s.sid, s.history_blocks):
                self.kind.host_evicted(sid)
            if host.get(s.sid):
                s.host_blocks, s.host_since = s.history_blocks, self.env.now

    def _unpin(self, s: Session) -> None:
        if s.pin is not None:
            s.pinned_block_s += s.pin.blocks * (self.env.now - s.pin_since)
            s.home.release_pin(s.pin)
            s.pin = None

    def lost_host_copy(self, s: Session) -> None:
        """Another session's offload evicted this one from host memory."""
        s.host_block_s += s.host_blocks * (self.env.now - s.host_since)
        s.host_blocks = 0

    # ------------------------------------------------------------------ measurements
    def _tool_time(self, s: Session, turn: int) -> float:
        rng = s.streams[_TOOLS]
        n = self.per_turn.one(rng)
        total = 0.0
        cum, last = self._tool_cum, len(self.tools) - 1
        for u in rng.random(n).tolist():
            tool = self.tools[min(bisect.bisect_right(cum, u), last)]  # np.searchsorted(side="right")
            total += _time(tool.latency_s, rng)
        return total

    def _account_call(self, s: Session, call, prompt: int) -> None:
        bs = self.pool.block_size
        s.prompt_tokens += call.prompt_tokens
        s.output_tokens += call.generated
        s.cached_tokens += call.cached_tokens
        # history the engine had computed before and computed again (KV dropped, reclaimed or lost)
        s.recomputed_tokens += max(0, s.history_blocks * bs - call.cached_tokens)
        if call.first_token_s == call.first_token_s:
            s.ttfts.append(call.first_token_s - call.arrival_s)
        if call.finish_s == call.finish_s:
            s.llm_s += call.finish_s - call.arrival_s
            if call.admitted_s == call.admitted_s:  # KV on the device while the call runs (mean context)
                blocks = (prompt + call.generated / 2) / bs
                s.device_block_s += blocks * (call.finish_s - call.admitted_s)


class _Probe:
    """What a router sees of a session's next turn before the call exists."""

    __slots__ = ("prompt_tokens", "output_tokens", "arrival_s", "prefix")

    def __init__(self, tokens: int, t: float):
        self.prompt_tokens, self.output_tokens, self.arrival_s, self.prefix = tokens, 0, t, None


class SessionKind(WorkloadKind):
    """Agent sessions (workload classes with ``session:``): one :class:`SessionClass` per class,
    a row per session in the sessions table."""

    key, table, schema = "session", "sessions", SESSIONS_SCHEMA
    order = 30

    def __init__(self, world, classes: list):
        super().__init__(world, classes)
        self.by_class = {c.name: SessionClass(world, c, self) for c in classes}

    def host_evicted(self, sid: int) -> None:
        """Session ``sid`` lost its host-memory copy to another session's offload."""
        entry = self.open.get(sid)
        if entry is not None:
            entry[0].lost_host_copy(entry[1])

    def record(self, sc: SessionClass, s: Session) -> None:
        """Write a session's row (it has ended, or the run has)."""
        world = self.world
        del self.open[s.sid]
        spec = sc.pool
        gib = sc.block_bytes / 2**30
        devices = spec.devices_per_replica
        # pinned KV keeps a share of its replica's devices from other work: that share of their
        # idle power and hourly price is the session's
        pinned_share_s = s.pinned_block_s / spec.kv_blocks * devices
        energy = sum(c.energy_j for c in s.calls) + pinned_share_s * spec.power.idle_w
        cost = (sum(world.call_cost_usd(c) for c in s.calls)
                + pinned_share_s * world.rates.devices[spec.name].usd_per_hour / 3600)
        ttft = np.array(s.ttfts) if s.ttfts else np.array([math.nan])
        world.recorder.row(self.table, (
            s.sid, sc.cls.name, sc.cls.pool, sc.policy.kind, s.status, s.arrival_s, s.finish_s, s.finish_s - s.arrival_s,
            s.turns, s.turns_done, float(ttft.mean()), float(ttft.max()), s.llm_s, s.tool_s, s.reload_s, s.prompt_tokens,
            s.output_tokens, s.cached_tokens, s.recomputed_tokens, (s.device_block_s + s.pinned_block_s) * gib,
            s.pinned_block_s * gib, s.host_block_s * gib, s.migrations, energy, cost,
        ))
        world.check_done()

    def close(self) -> None:
        """Sessions still running when the run ends are recorded as timed out."""
        for sc, s in list(self.open.values()):
            s.status = "timed-out"
            s.finish_s = math.nan
            sc.end(s)

    def summarize(self, tables, calls, t0: float, t1: float, summary: dict) -> dict:
        out = session_metrics(tables.table(self.table), calls, t0, t1)
        if out["sessions_created"] != self.created:
            raise RuntimeError(f"sessions table has {out['sessions_created']} rows but {self.created} sessions were created")
        return out
