"""A solo prefix's chunks held as ranges (sim/engine/kvchain.py) behave exactly as the same
chunks keyed one by one: the same return values, reference counts, reclaim order, free,
reclaimable, cached and evicted blocks after every operation, whatever the sequence (holes,
partial references, chunks put last, reloads with protected chunks, caching off)."""

import random

import pytest
from sim import native
from sim.engine.kvcache import KvPool, Prefix
from sim.engine.kvchain import Chain, Revival, Stretch

# (base, chunk blocks, ranged): two session chains and a keyed prefix sharing the pool's LRU order
PREFIXES = ((("s", 1), 2, True), (("s", 2), 3, True), ("g", 1, False))


class _Twin:
    """The same operations on a pool holding the chains as ranges and one keying every chunk."""

    def __init__(self, total: int, caching: bool):
        self.pools = (KvPool(total, 4, caching), KvPool(total, 4, caching))
        # (the first 100 blocks have keys)
        self.prefixes = ([Prefix(b, 400, chunk=c, solo=r) for b, c, r in PREFIXES],
                         [Prefix(b, 400, chunk=c, solo=False) for b, c, _ in PREFIXES])
        self.holders = [[] for _ in PREFIXES]  # blocks each holder references (leading chunks)
        self.back = ([], [])  # what the last hit would revive, in each pool's terms

    def both(self, method: str, p: int, *args, **kw):
        out = []
        for pool, prefixes in zip(self.pools, self.prefixes):
            try:
                out.append(getattr(pool, method)(prefixes[p], *args, **kw))
            except (KeyError, RuntimeError) as e:
                out.append(type(e))
        return out

    def check(self) -> None:
        a, b = self.pools
        assert a.expanded() == b.expanded()
        assert (a.free, a.lru_blocks, a.cached_blocks, a.evicted) == (b.free, b.lru_blocks, b.cached_blocks, b.evicted)
        assert a.cached_chunks() == b.cached_chunks() == len(b.refs)
        assert not b.chains and all(ch.runs for ch in a.chains.values())
        for ch in a.chains.values():  # every unreferenced chunk is in exactly one stretch, and only those
            zero = sum(hi - lo for lo, hi, n in ch.runs if n == 0)
            assert zero == sum(s.n for s in ch.stretches) and all(s.n and s in a.lru for s in ch.stretches)
            assert all(lo < hi and (not i or ch.runs[i - 1][1] <= lo) for i, (lo, hi, _) in enumerate(ch.runs))


def _expand(back) -> list:
    return [k for x in back for k in ([(x.base, i) for lo, hi in x.ranges for i in range(lo, hi)]
                                      if isinstance(x, Revival) else [x])]


def _apply(t: _Twin, op: int, p: int, x: int, y: int, flag: bool) -> None:
    """One operation on both pools, with the same results."""
    c = PREFIXES[p][1]
    holders = t.holders[p]
    if op == 0 and holders:  # a holder's private blocks become cached (allocated just before)
        i = x % len(holders)
        r = t.both("register", p, holders[i], holders[i] + y)
        assert r[0] == r[1]
        holders[i] += r[0]
        if r[0] <= t.pools[1].allocatable():  # (else as if they had been allocated long before)
            for pool in t.pools:
                pool.take(r[0])
    if op == 0 or op == 1:  # a call takes the leading cached chunks it finds
        r = t.both("ref_cached", p, y)
        assert r[0] == r[1]
        if r[0]:
            holders.append(r[0])
    elif op == 2 and holders:
        blocks = holders.pop(x % len(holders))
        r = t.both("unref", p, blocks, keep=flag)
        assert r[0] == r[1]
    elif op == 3:
        r = t.both("hit", p, y, set(), set())
        assert r[0][0] == r[1][0] and r[0][2] == r[1][2] and _expand(r[0][1]) == r[1][1]
        t.back = (r[0][1], r[1][1])
    elif op == 4:
        r = t.both("spare", p, min(x, y), max(x, y))
        assert r[0] == r[1]
    elif op == 5:  # a reload, keeping room (often about all there is), protecting what the last hit found
        protect = [frozenset(b) if flag else frozenset() for b in t.back]
        keep = max(0, t.pools[1].allocatable() - x) if y % 2 else x
        pins = [pool.restore(prefixes[p], y, keep=keep, protect=pr)
                for pool, prefixes, pr in zip(t.pools, t.prefixes, protect)]
        assert pins[0].blocks == pins[1].blocks
        if pins[0].blocks:
            holders.append(pins[0].blocks)
    elif op == 6:  # private blocks taken or given back
        n = min(x, y) - 3
        if n <= t.pools[1].allocatable() and t.pools[1].free - n <= t.pools[1].total:
            for pool in t.pools:
                pool.take(n)
    elif op == 7 and holders:  # a holder takes more chunks behind its own, if they are cached
        i = x % len(holders)
        refs = t.pools[1].refs
        end = holders[i] + c * (y % 4)
        if all(Prefix(PREFIXES[p][0], chunk=c).key(k) in refs for k in range(holders[i] // c, end // c)):
            r = t.both("ref", p, end, start=holders[i])
            assert r[0] == r[1]
            holders[i] = max(holders[i], end // c * c)
    elif op == 8:  # queries
        for q in ([holders[x % len(holders)]] if holders else []):
            r = t.both("referenced", p, q)
            assert r[0] == r[1]
        assert t.both("cached_prefix", p)[0] == t.both("cached_prefix", p)[1]
        r = t.both("missing", p, y)
        assert r[0] == r[1]


@pytest.mark.parametrize("block", range(8))
def test_ranged_chains_equal_chunk_by_chunk_keys(block):
    """50 sequences of 100 operations per block, drawn from fixed seeds (hypothesis drawing the
    operations shrank them to sequences too short to build holes, several stretches and
    pressure; these do, and reproduce)."""
    for seed in range(50 * block, 50 * block + 50):
        rng = random.Random(seed)
        t = _Twin(rng.randint(12, 60), rng.random() < 0.7)
        for _ in range(100):
            op = (rng.randint(0, 8), rng.randint(0, len(PREFIXES) - 1), rng.randint(0, 24), rng.randint(0, 40),
                  rng.random() < 0.5)
            _apply(t, *op)
            t.check()


def test_a_turn_of_a_long_history_touches_runs_not_chunks():
    """A session's 400-chunk history released, reclaimed in part, found and referenced again:
    one run, one stretch, whatever its length."""
    kv = KvPool(10_000, 16)
    p = Prefix(("session", 7), chunk=16, solo=True)
    kv.take(400 * 16)
    assert kv.register(p, 0, 400 * 16) == 400 * 16
    kv.unref(p, 400 * 16)
    ch = kv.chains[("session", 7)]
    assert ch.runs == [[0, 400, 0]] and len(kv.lru) == 1 and kv.lru_blocks == 6400
    kv.take(10_000 - 6400 + 5 * 16)  # reclaims the 5 deepest chunks (the oldest in line), at once
    assert ch.runs == [[0, 395, 0]] and kv.evicted == 80 and kv.free == 0
    assert kv.hit(p, 500 * 16, set(), set())[0] == 395 * 16
    assert kv.ref_cached(p, 500 * 16) == 395 * 16 and not kv.lru and kv.lru_blocks == 0
    assert ch.runs == [[0, 395, 1]] and ch.stretches == []


def test_stretch_ranges_split_in_place():
    ch = Chain("b", 1)
    s = Stretch(ch, [range(9, -1, -1)], 10)  # chunks 9 .. 0, deepest first
    assert s.subtract(3, 6) == 3 and list(s.chunks()) == [9, 8, 7, 6, 2, 1, 0]
    assert s.pop_front(2) == [(8, 10)] and list(s.chunks()) == [7, 6, 2, 1, 0] and s.n == 5
    assert s.first_outside([(5, 8)]) == 2 and s.first_outside([(0, 8)]) is None
    assert ch.with_count(3, 3) == [] and ch.count(0, 9) == 0
    up = Stretch(ch, [range(2, 6)], 4)
    assert up.subtract(3, 4) == 1 and list(up.chunks()) == [2, 4, 5]


@pytest.mark.parametrize("caching", [True, False])
def test_released_chain_is_freed_or_kept_by_caching(caching):
    kv = KvPool(100, 4, caching)
    p = Prefix("x", chunk=2, solo=True)
    kv.take(20)
    kv.register(p, 0, 20)
    kv.unref(p, 20)
    assert kv.cached_chunks() == (10 if caching else 0) and ("x" in kv.chains) == caching
    assert kv.allocatable() == 100 and kv.free == (80 if caching else 100)


class _Keyed(Prefix):
    """A session's prefix keyed chunk by chunk, as before ranges."""

    __slots__ = ()

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.ranged = False


@pytest.mark.skipif(native.build().startswith("compiled"), reason=(
    "the compiled engine's classes cannot be patched or subclassed: this test checks the pure Python "
    "sources (DCSIM_PURE_PYTHON=1), which tests/test_native.py holds equal to it"))
@pytest.mark.parametrize("mode", ["macro", "per_iteration"])
def test_session_tables_identical_with_chains_keyed_chunk_by_chunk(mode, tmp_path, monkeypatch):
    """Agent sessions under LRU, pinned (TTL) and offloaded KV beside chat on a small pool
    (preemptions, reclaimed history, reloads): the same calls, steps and sessions, bit for bit,
    whether their histories are held as ranges or keyed one chunk at a time."""
    from scenarios import llm_scenario, same_calls
    from sim.workloads import sessions
    from test_engine_speed_clock import SESSIONS, _tables

    raw = llm_scenario(**SESSIONS, engine_mode=mode)
    chains = []
    take = KvPool.take
    monkeypatch.setattr(KvPool, "take", lambda kv, n: chains.append(len(kv.chains)) or take(kv, n))
    s_r, c_r, st_r = _tables(raw, tmp_path, "ranges")
    assert max(chains) > 3  # histories were held as ranges
    monkeypatch.setattr(sessions, "Prefix", _Keyed)
    chains.clear()
    s_k, c_k, st_k = _tables(raw, tmp_path, "keyed")
    assert max(chains) == 0
    assert same_calls(c_r, c_k, attributed=()) and st_r.equals(st_k)
    assert s_r["sessions table"].equals(s_k["sessions table"])
    assert {k: v for k, v in s_r.items() if "wall" not in k} == {k: v for k, v in s_k.items() if "wall" not in k}
    assert max(c_r["preemptions"].to_pylist()) > 0 and sum(c_r["cached_tokens"].to_pylist()) > 0
