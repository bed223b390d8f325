"""The wire library shared by the CLI, the daemons, the traffic-manager and the agents.

- ``telepresence.wire.mux``: the data-plane protocol, sans-I/O.
- ``telepresence.wire.shell``: that protocol run over an anyio byte stream.
- ``telepresence.wire.tls``: the certificates and TLS contexts every link uses.
- ``telepresence.wire.proto``: the control API (gRPC, generated for grpclib).
"""
