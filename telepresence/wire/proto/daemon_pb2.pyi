from google.protobuf import empty_pb2 as _empty_pb2
from telepresence.wire.proto import manager_pb2 as _manager_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DaemonVersion(_message.Message):
    __slots__ = ("name", "version", "pid", "log_file")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    LOG_FILE_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    pid: int
    log_file: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., pid: _Optional[int] = ..., log_file: _Optional[str] = ...) -> None: ...

class ConnectRequest(_message.Message):
    __slots__ = ("kubeconfig", "context", "namespace", "manager_namespace", "mapped_namespaces", "also_proxy", "never_proxy", "transport", "manager_address", "socks", "environment")
    class EnvironmentEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KUBECONFIG_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    MANAGER_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    MAPPED_NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    ALSO_PROXY_FIELD_NUMBER: _ClassVar[int]
    NEVER_PROXY_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    MANAGER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SOCKS_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    kubeconfig: str
    context: str
    namespace: str
    manager_namespace: str
    mapped_namespaces: _containers.RepeatedScalarFieldContainer[str]
    also_proxy: _containers.RepeatedScalarFieldContainer[str]
    never_proxy: _containers.RepeatedScalarFieldContainer[str]
    transport: str
    manager_address: str
    socks: str
    environment: _containers.ScalarMap[str, str]
    def __init__(self, kubeconfig: _Optional[str] = ..., context: _Optional[str] = ..., namespace: _Optional[str] = ..., manager_namespace: _Optional[str] = ..., mapped_namespaces: _Optional[_Iterable[str]] = ..., also_proxy: _Optional[_Iterable[str]] = ..., never_proxy: _Optional[_Iterable[str]] = ..., transport: _Optional[str] = ..., manager_address: _Optional[str] = ..., socks: _Optional[str] = ..., environment: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ConnectInfo(_message.Message):
    __slots__ = ("state", "error", "context", "cluster_server", "namespace", "manager_namespace", "manager_namespace_source", "manager_version", "session_id", "transport", "cluster_info", "mapped_namespaces", "also_proxy", "never_proxy", "socks_address", "arrivals", "user_daemon", "root_daemon", "warnings")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        DISCONNECTED: _ClassVar[ConnectInfo.State]
        CONNECTING: _ClassVar[ConnectInfo.State]
        CONNECTED: _ClassVar[ConnectInfo.State]
        RECONNECTING: _ClassVar[ConnectInfo.State]
    DISCONNECTED: ConnectInfo.State
    CONNECTING: ConnectInfo.State
    CONNECTED: ConnectInfo.State
    RECONNECTING: ConnectInfo.State
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_SERVER_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    MANAGER_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    MANAGER_NAMESPACE_SOURCE_FIELD_NUMBER: _ClassVar[int]
    MANAGER_VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_INFO_FIELD_NUMBER: _ClassVar[int]
    MAPPED_NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    ALSO_PROXY_FIELD_NUMBER: _ClassVar[int]
    NEVER_PROXY_FIELD_NUMBER: _ClassVar[int]
    SOCKS_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ARRIVALS_FIELD_NUMBER: _ClassVar[int]
    USER_DAEMON_FIELD_NUMBER: _ClassVar[int]
    ROOT_DAEMON_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    state: ConnectInfo.State
    error: str
    context: str
    cluster_server: str
    namespace: str
    manager_namespace: str
    manager_namespace_source: str
    manager_version: str
    session_id: str
    transport: str
    cluster_info: _manager_pb2.ClusterInfo
    mapped_namespaces: _containers.RepeatedScalarFieldContainer[str]
    also_proxy: _containers.RepeatedScalarFieldContainer[str]
    never_proxy: _containers.RepeatedScalarFieldContainer[str]
    socks_address: str
    arrivals: int
    user_daemon: DaemonVersion
    root_daemon: RootStatus
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, state: _Optional[_Union[ConnectInfo.State, str]] = ..., error: _Optional[str] = ..., context: _Optional[str] = ..., cluster_server: _Optional[str] = ..., namespace: _Optional[str] = ..., manager_namespace: _Optional[str] = ..., manager_namespace_source: _Optional[str] = ..., manager_version: _Optional[str] = ..., session_id: _Optional[str] = ..., transport: _Optional[str] = ..., cluster_info: _Optional[_Union[_manager_pb2.ClusterInfo, _Mapping]] = ..., mapped_namespaces: _Optional[_Iterable[str]] = ..., also_proxy: _Optional[_Iterable[str]] = ..., never_proxy: _Optional[_Iterable[str]] = ..., socks_address: _Optional[str] = ..., arrivals: _Optional[int] = ..., user_daemon: _Optional[_Union[DaemonVersion, _Mapping]] = ..., root_daemon: _Optional[_Union[RootStatus, _Mapping]] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class DataPlaneRequest(_message.Message):
    __slots__ = ("session_id", "manager_namespace", "transport", "manager_pod", "manager_address", "kubeconfig", "context", "environment", "mux_port", "ca_certificate", "vif", "cluster_info")
    class EnvironmentEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MANAGER_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    MANAGER_POD_FIELD_NUMBER: _ClassVar[int]
    MANAGER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    KUBECONFIG_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    MUX_PORT_FIELD_NUMBER: _ClassVar[int]
    CA_CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    VIF_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_INFO_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    manager_namespace: str
    transport: str
    manager_pod: str
    manager_address: str
    kubeconfig: str
    context: str
    environment: _containers.ScalarMap[str, str]
    mux_port: int
    ca_certificate: bytes
    vif: VIFConfig
    cluster_info: _manager_pb2.ClusterInfo
    def __init__(self, session_id: _Optional[str] = ..., manager_namespace: _Optional[str] = ..., transport: _Optional[str] = ..., manager_pod: _Optional[str] = ..., manager_address: _Optional[str] = ..., kubeconfig: _Optional[str] = ..., context: _Optional[str] = ..., environment: _Optional[_Mapping[str, str]] = ..., mux_port: _Optional[int] = ..., ca_certificate: _Optional[bytes] = ..., vif: _Optional[_Union[VIFConfig, _Mapping]] = ..., cluster_info: _Optional[_Union[_manager_pb2.ClusterInfo, _Mapping]] = ...) -> None: ...

class VIFConfig(_message.Message):
    __slots__ = ("namespace", "mapped_namespaces", "also_proxy", "never_proxy", "allow_conflicting", "include_suffixes", "exclude_suffixes", "lookup_timeout_seconds")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    MAPPED_NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    ALSO_PROXY_FIELD_NUMBER: _ClassVar[int]
    NEVER_PROXY_FIELD_NUMBER: _ClassVar[int]
    ALLOW_CONFLICTING_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SUFFIXES_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_SUFFIXES_FIELD_NUMBER: _ClassVar[int]
    LOOKUP_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    mapped_namespaces: _containers.RepeatedScalarFieldContainer[str]
    also_proxy: _containers.RepeatedScalarFieldContainer[str]
    never_proxy: _containers.RepeatedScalarFieldContainer[str]
    allow_conflicting: _containers.RepeatedScalarFieldContainer[str]
    include_suffixes: _containers.RepeatedScalarFieldContainer[str]
    exclude_suffixes: _containers.RepeatedScalarFieldContainer[str]
    lookup_timeout_seconds: float
    def __init__(self, namespace: _Optional[str] = ..., mapped_namespaces: _Optional[_Iterable[str]] = ..., also_proxy: _Optional[_Iterable[str]] = ..., never_proxy: _Optional[_Iterable[str]] = ..., allow_conflicting: _Optional[_Iterable[str]] = ..., include_suffixes: _Optional[_Iterable[str]] = ..., exclude_suffixes: _Optional[_Iterable[str]] = ..., lookup_timeout_seconds: _Optional[float] = ...) -> None: ...

class RootStatus(_message.Message):
    __slots__ = ("version", "data_plane", "session_id", "vif")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DATA_PLANE_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    VIF_FIELD_NUMBER: _ClassVar[int]
    version: DaemonVersion
    data_plane: str
    session_id: str
    vif: VIFStatus
    def __init__(self, version: _Optional[_Union[DaemonVersion, _Mapping]] = ..., data_plane: _Optional[str] = ..., session_id: _Optional[str] = ..., vif: _Optional[_Union[VIFStatus, _Mapping]] = ...) -> None: ...

class VIFStatus(_message.Message):
    __slots__ = ("device", "routed", "never_proxied", "conflicts", "dns_address", "dns_mode")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    ROUTED_FIELD_NUMBER: _ClassVar[int]
    NEVER_PROXIED_FIELD_NUMBER: _ClassVar[int]
    CONFLICTS_FIELD_NUMBER: _ClassVar[int]
    DNS_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    DNS_MODE_FIELD_NUMBER: _ClassVar[int]
    device: str
    routed: _containers.RepeatedScalarFieldContainer[str]
    never_proxied: _containers.RepeatedScalarFieldContainer[str]
    conflicts: _containers.RepeatedScalarFieldContainer[str]
    dns_address: str
    dns_mode: str
    def __init__(self, device: _Optional[str] = ..., routed: _Optional[_Iterable[str]] = ..., never_proxied: _Optional[_Iterable[str]] = ..., conflicts: _Optional[_Iterable[str]] = ..., dns_address: _Optional[str] = ..., dns_mode: _Optional[str] = ...) -> None: ...

class LogLevelRequest(_message.Message):
    __slots__ = ("level", "duration_seconds")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    level: str
    duration_seconds: float
    def __init__(self, level: _Optional[str] = ..., duration_seconds: _Optional[float] = ...) -> None: ...
