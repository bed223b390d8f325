"""The traffic-manager: the control API, the session registry and the outbound relay.

One anyio program on asyncio (:mod:`manager.app`), started by ``python -m manager``. Its parts:

| module | does |
|---|---|
| :mod:`~manager.settings` | the environment the Deployment sets; the log level |
| :mod:`~manager.config` | the chart's files in ``CONFIG_DIR`` |
| :mod:`~manager.kube` | the Kubernetes adapter, the only user of kubernetes-asyncio |
| :mod:`~manager.informer` | list-and-watch copies of cluster objects |
| :mod:`~manager.scope`, :mod:`~manager.inventory` | the managed namespaces and their addresses |
| :mod:`~manager.cluster_info` | pod and Service subnets, cluster DNS, domain |
| :mod:`~manager.auth` | TokenReview and SubjectAccessReview of arriving clients |
| :mod:`~manager.sessions` | sessions, keepalive and expiry |
| :mod:`~manager.resolv`, :mod:`~manager.dns`, :mod:`~manager.rdata` | DNS lookups in the cluster |
| :mod:`~manager.policy` | where clients' streams and names may go |
| :mod:`~manager.dataplane`, :mod:`~manager.relay` | tpmux over TLS, dialling and relaying |
| :mod:`~manager.service` | the ``Manager`` gRPC service (grpclib) |
| :mod:`~manager.health` | ``/healthz`` and ``/readyz`` |

Intercepts, the agent injector and agents' sessions come with the next milestone; the service
(``ArriveAsAgent``), the sessions (``SessionKind.AGENT``) and the configuration
(``ManagerConfig.later``) leave their places.
"""
