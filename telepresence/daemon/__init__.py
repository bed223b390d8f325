"""The laptop's two daemons, each one anyio program behind a gRPC API on a unix socket.

- the user daemon (:mod:`telepresence.daemon.user`, ``connector``): the session with the
  traffic-manager, SOCKS, and (later) intercepts; runs as the user;
- the root daemon (:mod:`telepresence.daemon.root`, ``daemon``): the VIF; runs as root.

``python -m telepresence.daemon user|root`` runs one (:mod:`telepresence.daemon._main`). Where
the sockets and logs are, and how clients start a daemon: :mod:`telepresence.daemon._process`.
This package imports nothing itself, so that starting a daemon detached stays quick.
"""
