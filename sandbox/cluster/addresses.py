"""The sandbox network's address plan.

All of these exist only inside the sandbox's own namespaces; none is ever configured on the
host, so they cannot clash with the machine's networks.

- The *fabric* namespace is the network between nodes: it holds the API server, the cluster
  DNS and the corporate resolver, and routes each node's pod CIDR to that node.
- Node ``i`` (from 0) is ``10.89.0.(10+i)`` on the node network, runs its pods on
  ``10.244.i.0/24`` behind its bridge, and loads kube-proxy's rules.
- The workstation (the "laptop") shares only a /30 with the fabric: it reaches the API
  server and its corporate resolver on ``10.88.0.1`` and has no route to anything else.
"""

from __future__ import annotations

import ipaddress

NODE_NETWORK = ipaddress.ip_network("10.89.0.0/24")
FABRIC_IP = "10.89.0.1"
POD_NETWORK = ipaddress.ip_network("10.244.0.0/16")
SERVICE_NETWORK = ipaddress.ip_network("10.96.0.0/12")
KUBERNETES_SERVICE_IP = "10.96.0.1"
CLUSTER_DNS_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
API_PORT = 6443
DNS_PORT = 53

WORKSTATION_NETWORK = ipaddress.ip_network("10.88.0.0/30")
#: The fabric's side of the workstation link: the API server and corporate DNS as the
#: workstation sees them.
WORKSTATION_GATEWAY = "10.88.0.1"
WORKSTATION_IP = "10.88.0.2"
#: The outside zone the corporate resolver answers for.
CORPORATE_DOMAIN = "corp.example"

MAX_NODES = 16


def node_ip(index: int) -> str:
    return str(NODE_NETWORK[10 + index])


def pod_cidr(index: int) -> str:
    return str(list(POD_NETWORK.subnets(new_prefix=24))[index])
