"""Property tests of the KV block accounting through the real engine: the pool is never
over-committed, every block comes back, cached blocks are counted once with exact reference
counts, and no call is lost, whatever the load, sizes and prefix sharing."""

from collections import Counter

import pytest
import simpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.hardware import catalog
from sim.engine.call import Call
from sim.engine.replica import Replica
from sim.engine.scheduler import BatcherParams
from sim.engine.kvcache import Prefix
from sim.models.perf import RooflineModel
from sim.models.power import PowerModel


class _Checker:
    """A recorder that checks the replica's invariants at every committed run."""

    def __init__(self):
        self.replica = None
        self.calls = []

    def step(self, *row):
        r = self.replica
        r.sync_calls()  # (running calls' decode progress is kept in aggregate between reads)
        kv = r.kv
        assert 0 <= kv.free <= r.total_blocks
        # every block is free, private to one running call, or one cached block
        private = sum(c.blocks - c.shared for c in r.running)
        assert private + kv.cached_blocks == r.total_blocks - kv.free
        counts, order, size = kv.expanded()
        assert kv.cached_blocks == sum(size.values()) and kv.lru_blocks == sum(size[k] for k in order)
        # reference counts are exact; unreferenced cached chunks are exactly the reclaimable ones
        refs = Counter(c.prefix.key(i) for c in r.running if c.prefix is not None
                       for i in range(c.shared // c.prefix.chunk))
        assert refs == Counter({k: n for k, n in counts.items() if n})
        assert len(order) == len(set(order)) and set(order) == {k for k, n in counts.items() if n == 0}
        assert len(r.running) <= r.batcher.max_num_seqs

    def call(self, c):
        self.calls.append(c)

    def event(self, *a):
        pass


def _checked_replica(blocks: int, block_size: int, batcher: BatcherParams, macro: bool, caching: bool):
    """(environment, replica, checker) of an H100 / Llama-3.1-8B replica whose every committed
    run is checked against the KV invariants."""
    env = simpy.Environment()
    acc, model = catalog.accelerator("h100-sxm"), catalog.model("llama-3.1-8b")
    rec = _Checker()
    r = Replica(env, 0, "p", RooflineModel(model, acc), PowerModel(acc, acc.peak_flops("bf16")), 1, blocks, block_size,
                batcher, rec, 131072, max_run=(1 << 15) if macro else 1, prefix_caching=caching)
    rec.replica = r
    return env, r, rec


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    blocks=st.integers(20, 400),
    block_size=st.sampled_from([1, 16, 32]),
    budget=st.integers(64, 4096),
    max_seqs=st.integers(1, 64),
    chunked=st.booleans(),
    macro=st.booleans(),
    calls=st.lists(st.tuples(st.floats(0, 5), st.integers(1, 3000), st.integers(1, 400), st.sampled_from([None, 0, 1])),
                   min_size=1, max_size=40),
    caching=st.booleans(),
    chunk=st.sampled_from([1, 3]),
)
def test_kv_pool_never_overcommitted(blocks, block_size, budget, max_seqs, chunked, macro, calls, caching, chunk):
    env, r, rec = _checked_replica(blocks, block_size, BatcherParams(budget, max_seqs, "continuous" if chunked else "prefill_first"), macro, caching)

    def feed():
        for i, (t, p, o, shared) in enumerate(sorted(calls, key=lambda c: c[0])):
            yield env.timeout(max(0.0, t - env.now))
            # calls of one shared prefix have the same first min(prompt) tokens
            prefix = Prefix(("doc", shared), p, chunk=chunk) if shared is not None else None
            r.submit(Call(i, "c", "p", t, p, o, prefix=prefix))

    env.process(feed())
    env.run(until=10_000)
    r.finish(max(env.now, r.clock))
    assert r.kv.allocatable() == r.total_blocks and not r.running and not r.waiting
    assert all(n == 0 for n in r.kv.refs.values()) and (caching or not r.kv.refs)
    assert sorted(c.call_id for c in rec.calls) == list(range(len(calls)))
    for c in rec.calls:
        fits = -(-(c.prompt_tokens + c.output_tokens) // block_size) <= blocks
        assert c.status == ("finished" if fits else "dropped")
        if fits:
            assert c.generated == c.output_tokens


@pytest.mark.parametrize("macro", [True, False])
def test_cached_chunk_behind_a_chunk_being_filled_is_not_reclaimed(macro):
    """An admitted call finds chunks k0 and k1 about to be filled by a call admitted just before
    it, and k2 cached but unused, the oldest reclaimable chunk. It may take k2 only after the
    earlier call has allocated, and that allocation has to reclaim a chunk: not k2, which the
    decision counted as taken (this used to fail with a KeyError on k2)."""
    env, r, rec = _checked_replica(8, 1, BatcherParams(512, 8), macro, True)
    calls = [(0.0, 2, ("k1",)),  # leaves k1 cached
             (10.0, 4, ("z", "y", "k2")),  # leaves k2, y, z cached (k2 least recently used after k1)
             (15.0, 5, ()),  # reclaims k1
             (20.0, 6, ("k0", "k1")),  # fills k0 and k1, and reclaims one chunk
             (20.0, 4, ("k0", "k1", "k2"))]

    def feed():
        for i, (t, p, h) in enumerate(calls):
            yield env.timeout(max(0.0, t - env.now))
            r.submit(Call(i, "c", "p", t, p, 1, prefix=Prefix(None, p, hashes=h) if h else None))

    env.process(feed())
    env.run(until=100)
    assert [c.status for c in sorted(rec.calls, key=lambda c: c.call_id)] == ["finished"] * 5
    last = max(rec.calls, key=lambda c: c.call_id)
    assert last.cached_tokens == 3 and last.admitted_s == 20.0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    blocks=st.integers(6, 60),
    budget=st.integers(4, 256),
    max_seqs=st.integers(1, 16),
    macro=st.booleans(),
    calls=st.lists(st.tuples(st.integers(0, 6), st.lists(st.sampled_from("abc"), min_size=0, max_size=6),
                             st.integers(1, 8), st.integers(1, 20)), min_size=1, max_size=30),
)
def test_content_keyed_prefixes_keep_the_pool_consistent(blocks, budget, max_seqs, macro, calls):
    """Prefixes named by content, as the Mooncake traces' block hashes and vLLM's chained block
    hashes are: a chunk's key names its content and everything before it, so calls share any
    leading run of chunks and diverge after it, arriving together or apart, with chunks
    reclaimed and recomputed under a small pool."""
    env, r, rec = _checked_replica(blocks, 1, BatcherParams(budget, max_seqs), macro, True)

    def feed():
        for i, (t, hashes, extra, out) in enumerate(sorted(calls, key=lambda c: c[0])):
            yield env.timeout(max(0.0, t - env.now))
            prompt = len(hashes) + extra
            keys = tuple("".join(hashes[: j + 1]) for j in range(len(hashes)))  # chained: content + path
            prefix = Prefix(None, prompt, hashes=keys) if hashes else None
            r.submit(Call(i, "c", "p", float(t), prompt, out, prefix=prefix))

    env.process(feed())
    env.run(until=10_000)
    r.finish(max(env.now, r.clock))
    assert r.kv.allocatable() == r.total_blocks and not r.running and not r.waiting
    assert sorted(c.call_id for c in rec.calls) == list(range(len(calls)))
    for c in rec.calls:
        assert c.status == ("finished" if c.prompt_tokens + c.output_tokens <= blocks else "dropped")


def test_trace_block_ids_are_chained_like_vllm_block_hashes():
    from sim.workloads.arrivals import chain_block_ids

    a, b, c, d = chain_block_ids([[7, 7, 9], [9], [7, 7, 5], [7, 7, 9, 1]])
    assert len(set(a)) == 3  # an id repeated within a request names two different blocks
    assert b[0] not in a  # the same id at another position is another block
    assert c[:2] == a[:2] and c[2] != a[2]  # shared while the ids agree, apart after
    assert d[:3] == a  # a longer request extends the cached one
    # ids that are already chained (the Mooncake traces') keep exactly their sharing
    mooncake = [[0, 1, 2], [0, 3], [0, 1, 4]]
    keys = chain_block_ids(mooncake)
    pairs = [(x, y) for row in mooncake for x in row for y in row]
    assert all((mooncake[i][j] == mooncake[k][m]) == (keys[i][j] == keys[k][m])
               for i in range(3) for k in range(3) for j in range(len(mooncake[i])) for m in range(len(mooncake[k])))
    assert pairs  # (the trace has blocks)


def test_unchained_trace_ids_replay_to_the_end(tmp_path):
    """Hostile block ids (repeated in a request, reused at other positions) replay like any
    trace: every call is served and the KV pool ends empty."""
    import json

    from sim.config import validate
    from sim.output.memory import MemoryRecorder
    from sim.cluster.world import build

    rows = [{"t": 0, "in": 49, "out": 1, "ids": ["a", "a", "b"]}, {"t": 0, "in": 17, "out": 1, "ids": ["b"]}]
    rows += [{"t": 1 + i % 3, "in": 40 + 16 * (i % 4), "out": 3, "ids": ids}
             for i, ids in enumerate([["a", "a", "b"], ["b"], ["a", "b", "a"], ["b", "b"], ["a"], ["a", "a", "b", "b"]] * 4)]
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    raw = {"name": "t", "seed": 1, "duration_s": 10.0,
           "datacenter": {"pools": [{"name": "p", "accelerator": "h100-sxm", "model": "llama-3.1-8b",
                                     "engine": {"prefix_caching": True, "block_size": 16, "num_gpu_blocks": 6},
                                     "batcher": {"kind": "continuous", "max_num_batched_tokens": 80,
                                                 "max_num_seqs": 2}}]},
           "workload": {"classes": [{"name": "c", "pool": "p",
                                     "arrival": {"kind": "trace", "path": "t.jsonl", "time_column": "t",
                                                 "prompt_column": "in", "output_column": "out", "hash_column": "ids",
                                                 "hash_tokens": 16}}]}}
    rec = MemoryRecorder()
    world = build(validate(raw, "t", str(tmp_path)), rec)
    world.run()
    status = rec.table("calls")["status"].to_pylist()
    assert len(status) == len(rows) and set(status) == {"finished"}
    assert world.replicas[0].kv.allocatable() == world.replicas[0].total_blocks


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["free", "held", "lru", "pending"]), max_size=40), st.integers(1, 3),
       st.integers(0, 45), st.booleans())
def test_prefix_hits_found_in_bulk_equal_the_chunk_by_chunk_walk(states, chunk, limit_chunks, revive_some):
    """``KvPool.hit`` (leading cached chunks found with the dict's lookup mapped over the keys)
    gives the blocks and reclaimable keys of the plain walk: cached chunks count, pending ones
    (filled earlier in the same iteration) count, the first other one stops it."""
    from sim.engine.kvcache import KvPool

    bs = 4
    kv = KvPool(1000, bs)
    prefix = Prefix("p", chunk=chunk)
    keys = prefix.keys(0, len(states))
    pending, revived = set(), set()
    for i, (k, s) in enumerate(zip(keys, states)):
        if s in ("held", "lru"):
            kv.refs[k], kv.size[k] = (1 if s == "held" else 0), chunk
            if s == "lru":
                kv.lru[k] = None
                if revive_some and i % 2:
                    revived.add(k)
        elif s == "pending":
            pending.add(k)
    n, back = 0, []
    for k in keys[:min(limit_chunks, len(keys))]:  # the walk it replaced
        if k in kv.refs:
            if k in kv.lru and k not in revived:
                back.append(k)
        elif k not in pending:
            break
        n += 1
    assert kv.hit(prefix, limit_chunks * chunk, pending, revived) == (n * chunk, back, len(back) * chunk)
