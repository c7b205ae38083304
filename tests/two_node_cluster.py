"""Test helper: a Ray cluster of two nodes on 127.0.0.1 (Ray's own ``ray.cluster_utils.Cluster``: a head and a second
node, each with its own raylet), run as a process of its own so that its Ray settings are set before Ray is imported.

``python tests/two_node_cluster.py`` prints one JSON line (the cluster's address and each node's raylet PID), then
reads commands from stdin: ``kill-node`` SIGKILLs every process of the second node at once (as if its machine
died) and prints ``killed``; ``stop`` (or the end of stdin) shuts the cluster down. ``ray start --address`` cannot
make the second node: with Ray kept on loopback (see ``hpobench_stn.ray_cluster``) it refuses to join a cluster.
"""

import json
import os
import sys

from hpobench_stn.ray_cluster import import_ray, loopback_environ

# Ray's defaults take about 30 s to declare a node dead; these make it a few seconds.
FAST_FAILURE = {"RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "4"}


def _raylet_pid(node):
    from ray._private import ray_constants

    return node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid


def main() -> None:
    """Start the cluster, report it, and obey stdin."""
    os.environ.update({**loopback_environ(), **FAST_FAILURE})
    import_ray(loopback=True)
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 1, "include_dashboard": False})
    second = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    raylets = {"head_raylet": _raylet_pid(cluster.head_node), "node_raylet": _raylet_pid(second)}
    print(json.dumps({"address": cluster.address, **raylets}), flush=True)
    for line in sys.stdin:
        if line.strip() == "kill-node":
            cluster.remove_node(second, allow_graceful=False)
            print("killed", flush=True)
        elif line.strip() == "stop":
            break
    cluster.shutdown()


if __name__ == "__main__":
    main()
