"""The control API: gRPC services, defined in ``.proto`` files, compiled for grpclib.

``manager.proto`` defines the traffic-manager's ``Manager`` service (sessions, cluster info,
client configuration, DNS). For each ``<name>.proto`` in this directory, three modules are
generated beside it:

- ``<name>_pb2``: the protobuf messages, with type stubs in ``<name>_pb2.pyi``;
- ``<name>_grpc``: the grpclib service base class (``ManagerBase``, implemented by the
  traffic-manager) and the client stub (``ManagerStub``).

The generated files are checked in and never edited by hand: change the ``.proto`` file and run
``uv run nox -s proto`` (``telepresence.wire.proto.generate``); CI's ``proto_check`` session fails
when they are stale. Import them by module, e.g.
``from telepresence.wire.proto import manager_pb2, manager_grpc``. This package does not import
them itself, so that the generator still runs when they are broken or missing.
"""
