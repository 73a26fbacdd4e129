"""Sharded runs: one simulation split into shard worlds that exchange load reports at a
bounded simulated window (docs/sharding.md). :func:`run_sharded` is what a sharded run from the command line
calls."""

from sim.shard.runner import ShardFailed, run_sharded

__all__ = ["ShardFailed", "run_sharded"]
