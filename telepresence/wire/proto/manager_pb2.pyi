from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Protocol(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROTOCOL_UNSPECIFIED: _ClassVar[Protocol]
    PROTOCOL_TCP: _ClassVar[Protocol]
    PROTOCOL_UDP: _ClassVar[Protocol]
PROTOCOL_UNSPECIFIED: Protocol
PROTOCOL_TCP: Protocol
PROTOCOL_UDP: Protocol

class SessionInfo(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class VersionInfo(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class ClientInfo(_message.Message):
    __slots__ = ("name", "install_id", "product", "version", "namespace", "bearer_token")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INSTALL_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    BEARER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    name: str
    install_id: str
    product: str
    version: str
    namespace: str
    bearer_token: str
    def __init__(self, name: _Optional[str] = ..., install_id: _Optional[str] = ..., product: _Optional[str] = ..., version: _Optional[str] = ..., namespace: _Optional[str] = ..., bearer_token: _Optional[str] = ...) -> None: ...

class AgentInfo(_message.Message):
    __slots__ = ("name", "namespace", "pod_name", "pod_ip", "product", "version", "containers", "bearer_token")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    POD_NAME_FIELD_NUMBER: _ClassVar[int]
    POD_IP_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    BEARER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    name: str
    namespace: str
    pod_name: str
    pod_ip: bytes
    product: str
    version: str
    containers: _containers.RepeatedCompositeFieldContainer[ContainerInfo]
    bearer_token: str
    def __init__(self, name: _Optional[str] = ..., namespace: _Optional[str] = ..., pod_name: _Optional[str] = ..., pod_ip: _Optional[bytes] = ..., product: _Optional[str] = ..., version: _Optional[str] = ..., containers: _Optional[_Iterable[_Union[ContainerInfo, _Mapping]]] = ..., bearer_token: _Optional[str] = ...) -> None: ...

class ContainerInfo(_message.Message):
    __slots__ = ("name", "ports")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    ports: _containers.RepeatedCompositeFieldContainer[ContainerPort]
    def __init__(self, name: _Optional[str] = ..., ports: _Optional[_Iterable[_Union[ContainerPort, _Mapping]]] = ...) -> None: ...

class ContainerPort(_message.Message):
    __slots__ = ("name", "port", "protocol")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    name: str
    port: int
    protocol: Protocol
    def __init__(self, name: _Optional[str] = ..., port: _Optional[int] = ..., protocol: _Optional[_Union[Protocol, str]] = ...) -> None: ...

class IPNet(_message.Message):
    __slots__ = ("ip", "mask")
    IP_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    ip: bytes
    mask: int
    def __init__(self, ip: _Optional[bytes] = ..., mask: _Optional[int] = ...) -> None: ...

class ClusterInfo(_message.Message):
    __slots__ = ("pod_subnets", "service_subnet", "cluster_dns_ip", "cluster_domain", "manager_pod_ip", "manager_port", "data_plane")
    POD_SUBNETS_FIELD_NUMBER: _ClassVar[int]
    SERVICE_SUBNET_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_DNS_IP_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    MANAGER_POD_IP_FIELD_NUMBER: _ClassVar[int]
    MANAGER_PORT_FIELD_NUMBER: _ClassVar[int]
    DATA_PLANE_FIELD_NUMBER: _ClassVar[int]
    pod_subnets: _containers.RepeatedCompositeFieldContainer[IPNet]
    service_subnet: IPNet
    cluster_dns_ip: bytes
    cluster_domain: str
    manager_pod_ip: bytes
    manager_port: int
    data_plane: DataPlaneEndpoint
    def __init__(self, pod_subnets: _Optional[_Iterable[_Union[IPNet, _Mapping]]] = ..., service_subnet: _Optional[_Union[IPNet, _Mapping]] = ..., cluster_dns_ip: _Optional[bytes] = ..., cluster_domain: _Optional[str] = ..., manager_pod_ip: _Optional[bytes] = ..., manager_port: _Optional[int] = ..., data_plane: _Optional[_Union[DataPlaneEndpoint, _Mapping]] = ...) -> None: ...

class DataPlaneEndpoint(_message.Message):
    __slots__ = ("mux_port", "mux_version", "ca_certificate")
    MUX_PORT_FIELD_NUMBER: _ClassVar[int]
    MUX_VERSION_FIELD_NUMBER: _ClassVar[int]
    CA_CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    mux_port: int
    mux_version: int
    ca_certificate: bytes
    def __init__(self, mux_port: _Optional[int] = ..., mux_version: _Optional[int] = ..., ca_certificate: _Optional[bytes] = ...) -> None: ...

class ClientConfig(_message.Message):
    __slots__ = ("dns", "routing", "timeouts")
    DNS_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    TIMEOUTS_FIELD_NUMBER: _ClassVar[int]
    dns: DNSConfig
    routing: RoutingConfig
    timeouts: Timeouts
    def __init__(self, dns: _Optional[_Union[DNSConfig, _Mapping]] = ..., routing: _Optional[_Union[RoutingConfig, _Mapping]] = ..., timeouts: _Optional[_Union[Timeouts, _Mapping]] = ...) -> None: ...

class DNSConfig(_message.Message):
    __slots__ = ("include_suffixes", "exclude_suffixes", "lookup_timeout")
    INCLUDE_SUFFIXES_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_SUFFIXES_FIELD_NUMBER: _ClassVar[int]
    LOOKUP_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    include_suffixes: _containers.RepeatedScalarFieldContainer[str]
    exclude_suffixes: _containers.RepeatedScalarFieldContainer[str]
    lookup_timeout: _duration_pb2.Duration
    def __init__(self, include_suffixes: _Optional[_Iterable[str]] = ..., exclude_suffixes: _Optional[_Iterable[str]] = ..., lookup_timeout: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class RoutingConfig(_message.Message):
    __slots__ = ("also_proxy_subnets", "never_proxy_subnets", "allow_conflicting_subnets")
    ALSO_PROXY_SUBNETS_FIELD_NUMBER: _ClassVar[int]
    NEVER_PROXY_SUBNETS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_CONFLICTING_SUBNETS_FIELD_NUMBER: _ClassVar[int]
    also_proxy_subnets: _containers.RepeatedCompositeFieldContainer[IPNet]
    never_proxy_subnets: _containers.RepeatedCompositeFieldContainer[IPNet]
    allow_conflicting_subnets: _containers.RepeatedCompositeFieldContainer[IPNet]
    def __init__(self, also_proxy_subnets: _Optional[_Iterable[_Union[IPNet, _Mapping]]] = ..., never_proxy_subnets: _Optional[_Iterable[_Union[IPNet, _Mapping]]] = ..., allow_conflicting_subnets: _Optional[_Iterable[_Union[IPNet, _Mapping]]] = ...) -> None: ...

class Timeouts(_message.Message):
    __slots__ = ("cluster_connect", "traffic_manager_connect", "traffic_manager_api", "endpoint_dial", "roundtrip_latency", "intercept", "agent_install")
    CLUSTER_CONNECT_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_MANAGER_CONNECT_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_MANAGER_API_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_DIAL_FIELD_NUMBER: _ClassVar[int]
    ROUNDTRIP_LATENCY_FIELD_NUMBER: _ClassVar[int]
    INTERCEPT_FIELD_NUMBER: _ClassVar[int]
    AGENT_INSTALL_FIELD_NUMBER: _ClassVar[int]
    cluster_connect: _duration_pb2.Duration
    traffic_manager_connect: _duration_pb2.Duration
    traffic_manager_api: _duration_pb2.Duration
    endpoint_dial: _duration_pb2.Duration
    roundtrip_latency: _duration_pb2.Duration
    intercept: _duration_pb2.Duration
    agent_install: _duration_pb2.Duration
    def __init__(self, cluster_connect: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., traffic_manager_connect: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., traffic_manager_api: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., endpoint_dial: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., roundtrip_latency: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., intercept: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., agent_install: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class RemainRequest(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: SessionInfo
    def __init__(self, session: _Optional[_Union[SessionInfo, _Mapping]] = ...) -> None: ...

class DNSRequest(_message.Message):
    __slots__ = ("session", "name", "type")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    session: SessionInfo
    name: str
    type: int
    def __init__(self, session: _Optional[_Union[SessionInfo, _Mapping]] = ..., name: _Optional[str] = ..., type: _Optional[int] = ...) -> None: ...

class DNSResponse(_message.Message):
    __slots__ = ("rcode", "answers")
    RCODE_FIELD_NUMBER: _ClassVar[int]
    ANSWERS_FIELD_NUMBER: _ClassVar[int]
    rcode: int
    answers: _containers.RepeatedCompositeFieldContainer[ResourceRecord]
    def __init__(self, rcode: _Optional[int] = ..., answers: _Optional[_Iterable[_Union[ResourceRecord, _Mapping]]] = ...) -> None: ...

class ResourceRecord(_message.Message):
    __slots__ = ("name", "type", "record_class", "ttl", "rdata")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    RECORD_CLASS_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    RDATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: int
    record_class: int
    ttl: int
    rdata: bytes
    def __init__(self, name: _Optional[str] = ..., type: _Optional[int] = ..., record_class: _Optional[int] = ..., ttl: _Optional[int] = ..., rdata: _Optional[bytes] = ...) -> None: ...
