"""A two-node Ray cluster on loopback addresses for the tests that need a real cluster: a head on
127.0.0.2 and a worker on 127.0.0.3, 1 CPU each, with sockets and logs in a folder of their own."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile


@contextlib.contextmanager
def loopback_cluster(pythonpath: list):
    """Start the cluster, connect this process to it (its workers get ``pythonpath``), and tear
    everything down afterwards, restoring the environment."""
    tmp = tempfile.mkdtemp(prefix="r", dir="/tmp")
    env = {"RAY_DISABLE_USAGE_STATS": "1", "RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": tmp}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args=dict(node_ip_address="127.0.0.2", num_cpus=1,
                                                                object_store_memory=100 * 2**20,
                                                                include_dashboard=False))
    try:
        cluster.add_node(node_ip_address="127.0.0.3", num_cpus=1, object_store_memory=100 * 2**20)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, _node_ip_address="127.0.0.2",
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(str(p) for p in pythonpath)}},
                 logging_level=logging.WARNING)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(tmp, ignore_errors=True)
