"""Prefill/decode disaggregation: the KV-cache transfer between a prefill and a decode replica.

A pool with ``decode_pool`` only prefills: each call runs there until its first token (a
``prefilled`` row in the calls table), then its prompt's KV cache moves to a replica of the
decode pool, which serves the rest of the call (the call's own row: arrival as sent, so its
TTFT counts the prefill, the transfer and the decode queue, as a client of a P/D proxy sees
it). This module holds the pure part: the link between the pools and the transfer time.

The transfer goes device to device: each of the ``min(tp x pp)`` devices on the narrower
side moves its shard over its own link (a NIC of ``network_gb_s`` for the scale-out network,
or the scale-up link), in parallel. Blocks the decode replica already caches (a prefix shared
with an earlier call) are not sent. The time is ``latency + bytes / (devices x bandwidth)``.

Not modelled: layer-by-layer overlap of the transfer with the prefill (Mooncake, DistServe
pipeline it; here it starts when the prefill ends), the prefill replica holding the blocks
until they are pulled, and contention between transfers sharing a NIC.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.errors import ScenarioError
from sim.engine.kvcache import Prefix

# Per-transfer latency when the scenario gives none: one-sided RDMA reads (NIXL, Mooncake
# Transfer Engine) complete in a few microseconds on InfiniBand/RoCE; registering the blocks
# and the request round trip add tens of microseconds. An assumption; override with
# ``kv_transfer.latency_s``.
DEFAULT_NETWORK_LATENCY_S = 50e-6
# NVLink / Infinity Fabric copies within a node: a CUDA IPC copy launch, ~10 us.
DEFAULT_SCALE_UP_LATENCY_S = 10e-6


@dataclass(frozen=True)
class KvLink:
    """The link a prefill pool's KV caches take to its decode pool."""

    decode_pool: str
    bandwidth: float  # bytes/s per device, one direction
    latency_s: float
    devices: int  # devices moving shards in parallel (the narrower side's tp x pp)
    block_bytes: float  # one KV block of the whole replica (all its devices)

    def transfer_s(self, blocks: int) -> float:
        """Seconds to move ``blocks`` KV blocks (0: nothing to send, no latency either)."""
        if blocks <= 0:
            return 0.0
        return self.latency_s + blocks * self.block_bytes / (self.devices * self.bandwidth)


def resolve_link(pool, prefill_spec, decode_spec, source: str) -> KvLink:
    """The KV link of prefill pool ``pool`` (its config) between two resolved pool specs."""
    key = f"datacenter.pools.{pool.name}.kv_transfer"
    kt = pool.kv_transfer
    accs = (prefill_spec.acc, decode_spec.acc)
    if kt.bandwidth_gb_s is not None:
        bw = kt.bandwidth_gb_s * 1e9
    elif kt.link == "network":
        known = [a.network_bandwidth for a in accs]
        if None in known:
            missing = next(a.name for a, b in zip(accs, known) if b is None)
            raise ScenarioError(source, f"{key}.bandwidth_gb_s",
                                f"the card of {missing} gives no network_gb_s; set the per-device bandwidth here")
        bw = min(known)
    else:
        if prefill_spec.acc.name != decode_spec.acc.name:
            raise ScenarioError(source, f"{key}.link", "a scale-up link joins devices of one kind "
                                                       f"({prefill_spec.acc.name} and {decode_spec.acc.name} differ)")
        bw = prefill_spec.acc.link_bandwidth
    latency = kt.latency_s if kt.latency_s is not None else (
        DEFAULT_NETWORK_LATENCY_S if kt.link == "network" else DEFAULT_SCALE_UP_LATENCY_S)
    s = decode_spec  # the decode replica's KV pool: bytes of one block over all its devices
    block_bytes = s.kv_gib * 2**30 / s.kv_blocks * s.devices_per_replica
    return KvLink(pool.decode_pool, bw, latency, min(prefill_spec.devices_per_replica, decode_spec.devices_per_replica),
                  block_bytes)


def decode_prefix(call_id: int, prompt_tokens: int, block_size: int, shared: Prefix | None) -> Prefix:
    """Per-block keys of a transferred prompt on the decode replica: a shared prefix's blocks
    keep keys common to every call of that prefix (so the decode replica holds them once and
    skips sending them again), the rest are the call's own. Every full block is keyed but the
    block holding the last prompt token is recomputed there (vLLM's decode side likewise
    recomputes the last prompt token to get its logits), so it is not sent."""
    blocks = (prompt_tokens - 1) // block_size
    keys = []
    n_shared = 0
    if shared is not None:
        c = shared.chunk
        n_shared = min(blocks, shared.chunks(block_size) * c)
        keys = [shared.key(b) if c == 1 else (shared.key(b // c), b % c) for b in range(n_shared)]
    keys += [("pd", call_id, b) for b in range(n_shared, blocks)]
    return Prefix(("pd", call_id), blocks * block_size, hashes=tuple(keys), chunk=1)
