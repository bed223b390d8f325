"""Kubernetes protobuf request bodies, decoded into the shape a JSON body has.

client-go's typed clients, and so ``kubectl create namespace|configmap|deployment|...``,
``kubectl create token`` and ``kubectl auth can-i|whoami``, send their bodies as
``application/vnd.kubernetes.protobuf``: the four bytes ``k8s\\x00``, then a
``runtime.Unknown`` whose ``typeMeta`` names the apiVersion and kind and whose ``raw`` holds the
object's own message (k8s.io/apimachinery/pkg/runtime/serializer/protobuf). This module turns
such a body into the dict the same object sent as JSON gives, so validation, admission and
storage see one shape whatever the client sent; responses stay JSON, which every client reads.

Three parts: a reader of the protobuf wire format (varint, 64-bit, length-delimited and 32-bit
records; groups are refused, no Kubernetes message has one), a table of the messages these
commands send, with their field numbers from the ``generated.proto`` files of k8s.io/api and
k8s.io/apimachinery 1.32, and the decoder that walks a body with the table.

Go's protobuf encoder writes every non-pointer field, zero or not, where encoding/json leaves
out the ``omitempty`` ones. So the decoder drops empty strings, false, empty lists, maps and
messages and zero times; it keeps ints (a pointer ``replicas: 0`` matters) except those the
table marks as ``omitempty``, and keeps the zero of the pointer fields whose zero means something
(``optional: false``, ``emptyDir: {}``). A field number the table does not know, a kind it does
not know or a malformed body is a :class:`ProtobufError` that says so: nothing is dropped
silently.
"""

from __future__ import annotations

import base64
import datetime
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

MEDIA_TYPE: Final = "application/vnd.kubernetes.protobuf"
#: What every Kubernetes protobuf body starts with (protoEncodingPrefix in client-go's codec).
MAGIC: Final = b"k8s\x00"

# Wire types (https://protobuf.dev/programming-guides/encoding/#structure).
VARINT: Final = 0
I64: Final = 1
LEN: Final = 2
START_GROUP: Final = 3
END_GROUP: Final = 4
I32: Final = 5
_WIRE_NAMES: Final = {
    VARINT: "varint",
    I64: "64-bit",
    LEN: "length-delimited",
    START_GROUP: "start-group",
    END_GROUP: "end-group",
    I32: "32-bit",
}
_MAX_FIELD_NUMBER: Final = (1 << 29) - 1


class ProtobufError(ValueError):
    """A protobuf body this server cannot decode; the message says why and what to do instead."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem

    def __str__(self) -> str:
        return (
            f"cannot decode the protobuf request body: {self.problem}; send the object as JSON "
            "instead (for example with kubectl apply -f, which sends JSON)"
        )


# -- the wire format ---------------------------------------------------------------------------


def read_varint(data: bytes, position: int) -> tuple[int, int]:
    """Read the base-128 varint at ``position``.

    Args:
        data: The bytes holding the varint.
        position: Where it starts.

    Returns:
        The unsigned value (at most 64 bits) and the position after it.

    Raises:
        ProtobufError: The data ends inside the varint, or it is longer than 64 bits.
    """
    value = 0
    for index in range(position, min(position + 10, len(data))):
        byte = data[index]
        value |= (byte & 0x7F) << (7 * (index - position))
        if byte < 0x80:
            if value >> 64:
                raise ProtobufError("a varint is longer than 64 bits")
            return value, index + 1
    if len(data) - position >= 10:
        raise ProtobufError("a varint is longer than 10 bytes")
    raise ProtobufError("the data ends inside a varint")


def iter_fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """The records of one message: field number, wire type and value.

    A varint, 64-bit or 32-bit value is an unsigned int (the field's type says how to read it),
    a length-delimited one the bytes it delimits.

    Args:
        data: The message's bytes.

    Yields:
        ``(field number, wire type, value)`` in the order they appear.

    Raises:
        ProtobufError: The data is truncated, a field number is out of range, or a record is a
            group or has no valid wire type.
    """
    position = 0
    while position < len(data):
        key, position = read_varint(data, position)
        number, wire_type = key >> 3, key & 7
        if not 0 < number <= _MAX_FIELD_NUMBER:
            raise ProtobufError(f"field number {number} is out of range")
        value: int | bytes
        if wire_type == VARINT:
            value, position = read_varint(data, position)
        elif wire_type in (I64, I32):
            size = 8 if wire_type == I64 else 4
            if position + size > len(data):
                raise ProtobufError(f"the data ends inside field {number}")
            value = int.from_bytes(data[position : position + size], "little")
            position += size
        elif wire_type == LEN:
            length, position = read_varint(data, position)
            if position + length > len(data):
                raise ProtobufError(f"the data ends inside field {number}")
            value = data[position : position + length]
            position += length
        elif wire_type in (START_GROUP, END_GROUP):
            raise ProtobufError(f"field {number} is a group, which no Kubernetes message uses")
        else:
            raise ProtobufError(f"field {number} has wire type {wire_type}, which does not exist")
        yield number, wire_type, value


def int64(value: int) -> int:
    """A varint read as a signed 64-bit int (two's complement: -1 is ten bytes of 0xff...)."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >> 63 else value


def int32(value: int) -> int:
    """A varint read as a signed 32-bit int.

    A negative int32 is sign-extended to 64 bits on the wire (ten bytes); a reader keeps the
    low 32 bits, as Go's ``int32(v)`` does.
    """
    value &= (1 << 32) - 1
    return value - (1 << 32) if value >> 31 else value


# -- the schema --------------------------------------------------------------------------------

# Each message: field number -> "jsonName type flag", read from the generated.proto files.
#   type  string (the default), bytes (base64 in JSON), bool, int32, int64, json (bytes holding
#         JSON: RawExtension, FieldsV1) or a message of this table; [T] is repeated, {T} a
#         map<string, T>. "...Message" is a Go struct embedded inline: its fields appear in the
#         parent's JSON object (`json:",inline"`), as encoding/json writes them.
#   flag  ! keeps the zero value: a pointer field, which Go writes only when it is set, and
#           whose zero means something (optional: false, emptyDir: {}, storageClassName: "").
#         ? drops the zero of an int: a non-pointer `omitempty` int (hostPort, periodSeconds).
# Fields left out on purpose (the in-tree volume plugins that 1.32 deprecates or no longer
# serves) are unknown fields, so a body holding one is refused, not stored without it.
_META_V1: Final = {
    "ObjectMeta": {
        1: "name", 2: "generateName", 3: "namespace", 4: "selfLink", 5: "uid",
        6: "resourceVersion", 7: "generation int64?", 8: "creationTimestamp Time",
        9: "deletionTimestamp Time", 10: "deletionGracePeriodSeconds int64",
        11: "labels {string}", 12: "annotations {string}",
        13: "ownerReferences [OwnerReference]", 14: "finalizers [string]",
        17: "managedFields [ManagedFieldsEntry]",
    },
    "OwnerReference": {
        1: "kind", 3: "name", 4: "uid", 5: "apiVersion", 6: "controller bool!",
        7: "blockOwnerDeletion bool!",
    },
    "ManagedFieldsEntry": {
        1: "manager", 2: "operation", 3: "apiVersion", 4: "time Time", 6: "fieldsType",
        7: "fieldsV1 FieldsV1", 8: "subresource",
    },
    "FieldsV1": {1: "raw json"},
    "Time": {1: "seconds int64", 2: "nanos int32"},
    "MicroTime": {1: "seconds int64", 2: "nanos int32"},
    "Duration": {1: "duration int64"},
    "LabelSelector": {
        1: "matchLabels {string}", 2: "matchExpressions [LabelSelectorRequirement]",
    },
    "LabelSelectorRequirement": {1: "key", 2: "operator", 3: "values [string]"},
    "FieldSelectorRequirement": {1: "key", 2: "operator", 3: "values [string]"},
    "Condition": {
        1: "type", 2: "status", 3: "observedGeneration int64?", 4: "lastTransitionTime Time",
        5: "reason", 6: "message",
    },
    "DeleteOptions": {
        1: "gracePeriodSeconds int64", 2: "preconditions Preconditions",
        3: "orphanDependents bool!", 4: "propagationPolicy", 5: "dryRun [string]",
        6: "ignoreStoreReadErrorWithClusterBreakingPotential bool!",
    },
    "Preconditions": {1: "uid", 2: "resourceVersion"},
}  # fmt: skip
_RUNTIME: Final = {
    "Unknown": {1: "typeMeta TypeMeta", 2: "raw bytes", 3: "contentEncoding", 4: "contentType"},
    "TypeMeta": {1: "apiVersion", 2: "kind"},
    "RawExtension": {1: "raw json"},
}
_RESOURCE: Final = {"Quantity": {1: "string"}}
_INTSTR: Final = {"IntOrString": {1: "type int64", 2: "intVal int32", 3: "strVal"}}
_CORE_V1: Final = {
    "Namespace": {1: "metadata ObjectMeta", 2: "spec NamespaceSpec", 3: "status NamespaceStatus"},
    "NamespaceSpec": {1: "finalizers [string]"},
    "NamespaceStatus": {1: "phase", 2: "conditions [NamespaceCondition]"},
    "NamespaceCondition": {
        1: "type", 2: "status", 4: "lastTransitionTime Time", 5: "reason", 6: "message",
    },
    "ConfigMap": {
        1: "metadata ObjectMeta", 2: "data {string}", 3: "binaryData {bytes}",
        4: "immutable bool!",
    },
    "Secret": {
        1: "metadata ObjectMeta", 2: "data {bytes}", 3: "type", 4: "stringData {string}",
        5: "immutable bool!",
    },
    "ServiceAccount": {
        1: "metadata ObjectMeta", 2: "secrets [ObjectReference]",
        3: "imagePullSecrets [LocalObjectReference]", 4: "automountServiceAccountToken bool!",
    },
    "ObjectReference": {
        1: "kind", 2: "namespace", 3: "name", 4: "uid", 5: "apiVersion", 6: "resourceVersion",
        7: "fieldPath",
    },
    "LocalObjectReference": {1: "name"},
    "TypedLocalObjectReference": {1: "apiGroup", 2: "kind", 3: "name"},
    "TypedObjectReference": {1: "apiGroup", 2: "kind", 3: "name", 4: "namespace"},
    "Service": {1: "metadata ObjectMeta", 2: "spec ServiceSpec", 3: "status ServiceStatus"},
    "ServiceSpec": {
        1: "ports [ServicePort]", 2: "selector {string}", 3: "clusterIP", 4: "type",
        5: "externalIPs [string]", 7: "sessionAffinity", 8: "loadBalancerIP",
        9: "loadBalancerSourceRanges [string]", 10: "externalName", 11: "externalTrafficPolicy",
        12: "healthCheckNodePort int32?", 13: "publishNotReadyAddresses bool",
        14: "sessionAffinityConfig SessionAffinityConfig", 17: "ipFamilyPolicy",
        18: "clusterIPs [string]", 19: "ipFamilies [string]",
        20: "allocateLoadBalancerNodePorts bool!", 21: "loadBalancerClass",
        22: "internalTrafficPolicy", 23: "trafficDistribution",
    },
    "ServicePort": {
        1: "name", 2: "protocol", 3: "port int32", 4: "targetPort IntOrString",
        5: "nodePort int32?", 6: "appProtocol",
    },
    "SessionAffinityConfig": {1: "clientIP ClientIPConfig"},
    "ClientIPConfig": {1: "timeoutSeconds int32"},
    "ServiceStatus": {1: "loadBalancer LoadBalancerStatus", 2: "conditions [Condition]"},
    "LoadBalancerStatus": {1: "ingress [LoadBalancerIngress]"},
    "LoadBalancerIngress": {1: "ip", 2: "hostname", 3: "ipMode", 4: "ports [PortStatus]"},
    "PortStatus": {1: "port int32", 2: "protocol", 3: "error"},
    "ResourceQuota": {
        1: "metadata ObjectMeta", 2: "spec ResourceQuotaSpec", 3: "status ResourceQuotaStatus",
    },
    "ResourceQuotaSpec": {
        1: "hard {Quantity}", 2: "scopes [string]", 3: "scopeSelector ScopeSelector",
    },
    "ScopeSelector": {1: "matchExpressions [ScopedResourceSelectorRequirement]"},
    "ScopedResourceSelectorRequirement": {1: "scopeName", 2: "operator", 3: "values [string]"},
    "ResourceQuotaStatus": {1: "hard {Quantity}", 2: "used {Quantity}"},
    # Pods, as a workload's template holds them.
    "PodTemplateSpec": {1: "metadata ObjectMeta", 2: "spec PodSpec"},
    "PodSpec": {
        1: "volumes [Volume]", 2: "containers [Container]", 3: "restartPolicy",
        4: "terminationGracePeriodSeconds int64", 5: "activeDeadlineSeconds int64",
        6: "dnsPolicy", 7: "nodeSelector {string}", 8: "serviceAccountName",
        9: "serviceAccount", 10: "nodeName", 11: "hostNetwork bool", 12: "hostPID bool",
        13: "hostIPC bool", 14: "securityContext PodSecurityContext",
        15: "imagePullSecrets [LocalObjectReference]", 16: "hostname", 17: "subdomain",
        18: "affinity Affinity", 19: "schedulerName", 20: "initContainers [Container]",
        21: "automountServiceAccountToken bool!", 22: "tolerations [Toleration]",
        23: "hostAliases [HostAlias]", 24: "priorityClassName", 25: "priority int32",
        26: "dnsConfig PodDNSConfig", 27: "shareProcessNamespace bool!",
        28: "readinessGates [PodReadinessGate]", 29: "runtimeClassName",
        30: "enableServiceLinks bool!", 31: "preemptionPolicy", 32: "overhead {Quantity}",
        33: "topologySpreadConstraints [TopologySpreadConstraint]",
        34: "ephemeralContainers [EphemeralContainer]", 35: "setHostnameAsFQDN bool!",
        36: "os PodOS", 37: "hostUsers bool!", 38: "schedulingGates [PodSchedulingGate]",
        39: "resourceClaims [PodResourceClaim]", 40: "resources ResourceRequirements",
    },
    "Container": {
        1: "name", 2: "image", 3: "command [string]", 4: "args [string]", 5: "workingDir",
        6: "ports [ContainerPort]", 7: "env [EnvVar]", 8: "resources ResourceRequirements",
        9: "volumeMounts [VolumeMount]", 10: "livenessProbe Probe", 11: "readinessProbe Probe",
        12: "lifecycle Lifecycle", 13: "terminationMessagePath", 14: "imagePullPolicy",
        15: "securityContext SecurityContext", 16: "stdin bool", 17: "stdinOnce bool",
        18: "tty bool", 19: "envFrom [EnvFromSource]", 20: "terminationMessagePolicy",
        21: "volumeDevices [VolumeDevice]", 22: "startupProbe Probe",
        23: "resizePolicy [ContainerResizePolicy]", 24: "restartPolicy",
    },
    "EphemeralContainer": {1: "...EphemeralContainerCommon", 2: "targetContainerName"},
    "ContainerPort": {
        1: "name", 2: "hostPort int32?", 3: "containerPort int32", 4: "protocol", 5: "hostIP",
    },
    "EnvVar": {1: "name", 2: "value", 3: "valueFrom EnvVarSource"},
    "EnvVarSource": {
        1: "fieldRef ObjectFieldSelector", 2: "resourceFieldRef ResourceFieldSelector",
        3: "configMapKeyRef ConfigMapKeySelector", 4: "secretKeyRef SecretKeySelector",
    },
    "ObjectFieldSelector": {1: "apiVersion", 2: "fieldPath"},
    "ResourceFieldSelector": {1: "containerName", 2: "resource", 3: "divisor Quantity"},
    "ConfigMapKeySelector": {1: "...LocalObjectReference", 2: "key", 3: "optional bool!"},
    "SecretKeySelector": {1: "...LocalObjectReference", 2: "key", 3: "optional bool!"},
    "EnvFromSource": {
        1: "prefix", 2: "configMapRef ConfigMapEnvSource!", 3: "secretRef SecretEnvSource!",
    },
    "ConfigMapEnvSource": {1: "...LocalObjectReference", 2: "optional bool!"},
    "SecretEnvSource": {1: "...LocalObjectReference", 2: "optional bool!"},
    "ResourceRequirements": {
        1: "limits {Quantity}", 2: "requests {Quantity}", 3: "claims [ResourceClaim]",
    },
    "ResourceClaim": {1: "name", 2: "request"},
    "ContainerResizePolicy": {1: "resourceName", 2: "restartPolicy"},
    "VolumeMount": {
        1: "name", 2: "readOnly bool", 3: "mountPath", 4: "subPath", 5: "mountPropagation",
        6: "subPathExpr", 7: "recursiveReadOnly",
    },
    "VolumeDevice": {1: "name", 2: "devicePath"},
    "Probe": {
        1: "...ProbeHandler", 2: "initialDelaySeconds int32?", 3: "timeoutSeconds int32?",
        4: "periodSeconds int32?", 5: "successThreshold int32?", 6: "failureThreshold int32?",
        7: "terminationGracePeriodSeconds int64",
    },
    "ProbeHandler": {
        1: "exec ExecAction!", 2: "httpGet HTTPGetAction!", 3: "tcpSocket TCPSocketAction!",
        4: "grpc GRPCAction!",
    },
    "ExecAction": {1: "command [string]"},
    "HTTPGetAction": {
        1: "path", 2: "port IntOrString", 3: "host", 4: "scheme", 5: "httpHeaders [HTTPHeader]",
    },
    "HTTPHeader": {1: "name", 2: "value"},
    "TCPSocketAction": {1: "port IntOrString", 2: "host"},
    "GRPCAction": {1: "port int32", 2: "service"},
    "Lifecycle": {1: "postStart LifecycleHandler", 2: "preStop LifecycleHandler"},
    "LifecycleHandler": {
        1: "exec ExecAction!", 2: "httpGet HTTPGetAction!", 3: "tcpSocket TCPSocketAction!",
        4: "sleep SleepAction!",
    },
    "SleepAction": {1: "seconds int64"},
    "SecurityContext": {
        1: "capabilities Capabilities", 2: "privileged bool!", 3: "seLinuxOptions SELinuxOptions",
        4: "runAsUser int64", 5: "runAsNonRoot bool!", 6: "readOnlyRootFilesystem bool!",
        7: "allowPrivilegeEscalation bool!", 8: "runAsGroup int64", 9: "procMount",
        10: "windowsOptions WindowsSecurityContextOptions", 11: "seccompProfile SeccompProfile",
        12: "appArmorProfile AppArmorProfile",
    },
    "PodSecurityContext": {
        1: "seLinuxOptions SELinuxOptions", 2: "runAsUser int64", 3: "runAsNonRoot bool!",
        4: "supplementalGroups [int64]", 5: "fsGroup int64", 6: "runAsGroup int64",
        7: "sysctls [Sysctl]", 8: "windowsOptions WindowsSecurityContextOptions",
        9: "fsGroupChangePolicy", 10: "seccompProfile SeccompProfile",
        11: "appArmorProfile AppArmorProfile", 12: "supplementalGroupsPolicy",
        13: "seLinuxChangePolicy",
    },
    "Capabilities": {1: "add [string]", 2: "drop [string]"},
    "SELinuxOptions": {1: "user", 2: "role", 3: "type", 4: "level"},
    "WindowsSecurityContextOptions": {
        1: "gmsaCredentialSpecName", 2: "gmsaCredentialSpec", 3: "runAsUserName",
        4: "hostProcess bool!",
    },
    "SeccompProfile": {1: "type", 2: "localhostProfile"},
    "AppArmorProfile": {1: "type", 2: "localhostProfile"},
    "Sysctl": {1: "name", 2: "value"},
    "Affinity": {
        1: "nodeAffinity NodeAffinity", 2: "podAffinity PodAffinity",
        3: "podAntiAffinity PodAntiAffinity",
    },
    "NodeAffinity": {
        1: "requiredDuringSchedulingIgnoredDuringExecution NodeSelector",
        2: "preferredDuringSchedulingIgnoredDuringExecution [PreferredSchedulingTerm]",
    },
    "NodeSelector": {1: "nodeSelectorTerms [NodeSelectorTerm]"},
    "NodeSelectorTerm": {
        1: "matchExpressions [NodeSelectorRequirement]",
        2: "matchFields [NodeSelectorRequirement]",
    },
    "NodeSelectorRequirement": {1: "key", 2: "operator", 3: "values [string]"},
    "PreferredSchedulingTerm": {1: "weight int32", 2: "preference NodeSelectorTerm"},
    "PodAffinity": {
        1: "requiredDuringSchedulingIgnoredDuringExecution [PodAffinityTerm]",
        2: "preferredDuringSchedulingIgnoredDuringExecution [WeightedPodAffinityTerm]",
    },
    "PodAntiAffinity": {
        1: "requiredDuringSchedulingIgnoredDuringExecution [PodAffinityTerm]",
        2: "preferredDuringSchedulingIgnoredDuringExecution [WeightedPodAffinityTerm]",
    },
    "PodAffinityTerm": {
        1: "labelSelector LabelSelector", 2: "namespaces [string]", 3: "topologyKey",
        4: "namespaceSelector LabelSelector", 5: "matchLabelKeys [string]",
        6: "mismatchLabelKeys [string]",
    },
    "WeightedPodAffinityTerm": {1: "weight int32", 2: "podAffinityTerm PodAffinityTerm"},
    "Toleration": {
        1: "key", 2: "operator", 3: "value", 4: "effect", 5: "tolerationSeconds int64",
    },
    "HostAlias": {1: "ip", 2: "hostnames [string]"},
    "PodDNSConfig": {
        1: "nameservers [string]", 2: "searches [string]", 3: "options [PodDNSConfigOption]",
    },
    "PodDNSConfigOption": {1: "name", 2: "value"},
    "PodReadinessGate": {1: "conditionType"},
    "TopologySpreadConstraint": {
        1: "maxSkew int32", 2: "topologyKey", 3: "whenUnsatisfiable",
        4: "labelSelector LabelSelector", 5: "minDomains int32", 6: "nodeAffinityPolicy",
        7: "nodeTaintsPolicy", 8: "matchLabelKeys [string]",
    },
    "PodOS": {1: "name"},
    "PodSchedulingGate": {1: "name"},
    "PodResourceClaim": {1: "name", 3: "resourceClaimName", 4: "resourceClaimTemplateName"},
    # Volumes: a VolumeSource names its kind by which (pointer) field is set, so an empty one
    # (emptyDir: {}) is kept.
    "Volume": {1: "name", 2: "...VolumeSource"},
    "VolumeSource": {
        1: "hostPath HostPathVolumeSource!", 2: "emptyDir EmptyDirVolumeSource!",
        6: "secret SecretVolumeSource!", 7: "nfs NFSVolumeSource!",
        10: "persistentVolumeClaim PersistentVolumeClaimVolumeSource!",
        16: "downwardAPI DownwardAPIVolumeSource!", 19: "configMap ConfigMapVolumeSource!",
        26: "projected ProjectedVolumeSource!", 28: "csi CSIVolumeSource!",
        29: "ephemeral EphemeralVolumeSource!", 30: "image ImageVolumeSource!",
    },
    "HostPathVolumeSource": {1: "path", 2: "type"},
    "EmptyDirVolumeSource": {1: "medium", 2: "sizeLimit Quantity"},
    "SecretVolumeSource": {
        1: "secretName", 2: "items [KeyToPath]", 3: "defaultMode int32", 4: "optional bool!",
    },
    "ConfigMapVolumeSource": {
        1: "...LocalObjectReference", 2: "items [KeyToPath]", 3: "defaultMode int32",
        4: "optional bool!",
    },
    "KeyToPath": {1: "key", 2: "path", 3: "mode int32"},
    "NFSVolumeSource": {1: "server", 2: "path", 3: "readOnly bool"},
    "PersistentVolumeClaimVolumeSource": {1: "claimName", 2: "readOnly bool"},
    "DownwardAPIVolumeSource": {1: "items [DownwardAPIVolumeFile]", 2: "defaultMode int32"},
    "DownwardAPIVolumeFile": {
        1: "path", 2: "fieldRef ObjectFieldSelector",
        3: "resourceFieldRef ResourceFieldSelector", 4: "mode int32",
    },
    "ProjectedVolumeSource": {1: "sources [VolumeProjection]", 2: "defaultMode int32"},
    "VolumeProjection": {
        1: "secret SecretProjection!", 2: "downwardAPI DownwardAPIProjection!",
        3: "configMap ConfigMapProjection!",
        4: "serviceAccountToken ServiceAccountTokenProjection!",
        5: "clusterTrustBundle ClusterTrustBundleProjection!",
    },
    "SecretProjection": {
        1: "...LocalObjectReference", 2: "items [KeyToPath]", 4: "optional bool!",
    },
    "ConfigMapProjection": {
        1: "...LocalObjectReference", 2: "items [KeyToPath]", 4: "optional bool!",
    },
    "DownwardAPIProjection": {1: "items [DownwardAPIVolumeFile]"},
    "ServiceAccountTokenProjection": {1: "audience", 2: "expirationSeconds int64", 3: "path"},
    "ClusterTrustBundleProjection": {
        1: "name", 2: "signerName", 3: "labelSelector LabelSelector", 4: "path",
        5: "optional bool!",
    },
    "CSIVolumeSource": {
        1: "driver", 2: "readOnly bool!", 3: "fsType", 4: "volumeAttributes {string}",
        5: "nodePublishSecretRef LocalObjectReference",
    },
    "EphemeralVolumeSource": {1: "volumeClaimTemplate PersistentVolumeClaimTemplate"},
    "PersistentVolumeClaimTemplate": {
        1: "metadata ObjectMeta", 2: "spec PersistentVolumeClaimSpec",
    },
    "PersistentVolumeClaimSpec": {
        1: "accessModes [string]", 2: "resources VolumeResourceRequirements",
        3: "volumeName", 4: "selector LabelSelector",
        # storageClassName: "" asks for a volume without a class, unlike leaving it out.
        5: "storageClassName!", 6: "volumeMode", 7: "dataSource TypedLocalObjectReference",
        8: "dataSourceRef TypedObjectReference", 9: "volumeAttributesClassName",
    },
    "VolumeResourceRequirements": {1: "limits {Quantity}", 2: "requests {Quantity}"},
    "ImageVolumeSource": {1: "reference", 2: "pullPolicy"},
}  # fmt: skip
# An ephemeral container has a container's fields under another message name.
_CORE_V1["EphemeralContainerCommon"] = _CORE_V1["Container"]
_APPS_V1: Final = {
    "Deployment": {
        1: "metadata ObjectMeta", 2: "spec DeploymentSpec", 3: "status DeploymentStatus",
    },
    "DeploymentSpec": {
        1: "replicas int32", 2: "selector LabelSelector", 3: "template PodTemplateSpec",
        4: "strategy DeploymentStrategy", 5: "minReadySeconds int32?",
        6: "revisionHistoryLimit int32", 7: "paused bool", 9: "progressDeadlineSeconds int32",
    },
    "DeploymentStrategy": {1: "type", 2: "rollingUpdate RollingUpdateDeployment"},
    "RollingUpdateDeployment": {1: "maxUnavailable IntOrString", 2: "maxSurge IntOrString"},
    "DeploymentStatus": {
        1: "observedGeneration int64?", 2: "replicas int32?", 3: "updatedReplicas int32?",
        4: "availableReplicas int32?", 5: "unavailableReplicas int32?",
        6: "conditions [DeploymentCondition]", 7: "readyReplicas int32?",
        8: "collisionCount int32",
    },
    "DeploymentCondition": {
        1: "type", 2: "status", 4: "reason", 5: "message", 6: "lastUpdateTime Time",
        7: "lastTransitionTime Time",
    },
}  # fmt: skip
_AUTOSCALING_V1: Final = {
    "Scale": {1: "metadata ObjectMeta", 2: "spec ScaleSpec", 3: "status ScaleStatus"},
    # Scaling to zero must reach the server, though JSON clients leave replicas: 0 out.
    "ScaleSpec": {1: "replicas int32"},
    "ScaleStatus": {1: "replicas int32", 2: "selector"},
}
_BATCH_V1: Final = {
    "Job": {1: "metadata ObjectMeta", 2: "spec JobSpec", 3: "status JobStatus"},
    "JobSpec": {
        1: "parallelism int32", 2: "completions int32", 3: "activeDeadlineSeconds int64",
        4: "selector LabelSelector", 5: "manualSelector bool!", 6: "template PodTemplateSpec",
        7: "backoffLimit int32", 8: "ttlSecondsAfterFinished int32", 9: "completionMode",
        10: "suspend bool!", 11: "podFailurePolicy PodFailurePolicy",
        12: "backoffLimitPerIndex int32", 13: "maxFailedIndexes int32",
        14: "podReplacementPolicy", 15: "managedBy", 16: "successPolicy SuccessPolicy",
    },
    "PodFailurePolicy": {1: "rules [PodFailurePolicyRule]"},
    "PodFailurePolicyRule": {
        1: "action", 2: "onExitCodes PodFailurePolicyOnExitCodesRequirement",
        3: "onPodConditions [PodFailurePolicyOnPodConditionsPattern]",
    },
    "PodFailurePolicyOnExitCodesRequirement": {
        1: "containerName", 2: "operator", 3: "values [int32]",
    },
    "PodFailurePolicyOnPodConditionsPattern": {1: "type", 2: "status"},
    "SuccessPolicy": {1: "rules [SuccessPolicyRule]"},
    "SuccessPolicyRule": {1: "succeededIndexes", 2: "succeededCount int32"},
    "JobStatus": {
        1: "conditions [JobCondition]", 2: "startTime Time", 3: "completionTime Time",
        4: "active int32?", 5: "succeeded int32?", 6: "failed int32?", 7: "completedIndexes",
        8: "uncountedTerminatedPods UncountedTerminatedPods", 9: "ready int32",
        10: "failedIndexes", 11: "terminating int32",
    },
    "JobCondition": {
        1: "type", 2: "status", 3: "lastProbeTime Time", 4: "lastTransitionTime Time",
        5: "reason", 6: "message",
    },
    "UncountedTerminatedPods": {1: "succeeded [string]", 2: "failed [string]"},
    "CronJob": {1: "metadata ObjectMeta", 2: "spec CronJobSpec", 3: "status CronJobStatus"},
    "CronJobSpec": {
        1: "schedule", 2: "startingDeadlineSeconds int64", 3: "concurrencyPolicy",
        4: "suspend bool!", 5: "jobTemplate JobTemplateSpec",
        6: "successfulJobsHistoryLimit int32", 7: "failedJobsHistoryLimit int32",
        8: "timeZone",
    },
    "JobTemplateSpec": {1: "metadata ObjectMeta", 2: "spec JobSpec"},
    "CronJobStatus": {
        1: "active [ObjectReference]", 4: "lastScheduleTime Time", 5: "lastSuccessfulTime Time",
    },
}  # fmt: skip
_RBAC_V1: Final = {
    "Role": {1: "metadata ObjectMeta", 2: "rules [PolicyRule]"},
    "ClusterRole": {
        1: "metadata ObjectMeta", 2: "rules [PolicyRule]", 3: "aggregationRule AggregationRule",
    },
    "PolicyRule": {
        1: "verbs [string]", 2: "apiGroups [string]", 3: "resources [string]",
        4: "resourceNames [string]", 5: "nonResourceURLs [string]",
    },
    "AggregationRule": {1: "clusterRoleSelectors [LabelSelector]"},
    "RoleBinding": {1: "metadata ObjectMeta", 2: "subjects [Subject]", 3: "roleRef RoleRef"},
    "ClusterRoleBinding": {
        1: "metadata ObjectMeta", 2: "subjects [Subject]", 3: "roleRef RoleRef",
    },
    "Subject": {1: "kind", 2: "apiGroup", 3: "name", 4: "namespace"},
    "RoleRef": {1: "apiGroup", 2: "kind", 3: "name"},
}  # fmt: skip
_AUTHENTICATION_V1: Final = {
    "TokenRequest": {
        1: "metadata ObjectMeta", 2: "spec TokenRequestSpec", 3: "status TokenRequestStatus",
    },
    "TokenRequestSpec": {
        1: "audiences [string]", 3: "boundObjectRef BoundObjectReference",
        4: "expirationSeconds int64",
    },
    "BoundObjectReference": {1: "kind", 2: "apiVersion", 3: "name", 4: "uid"},
    "TokenRequestStatus": {1: "token", 2: "expirationTimestamp Time"},
    "SelfSubjectReview": {1: "metadata ObjectMeta", 2: "status SelfSubjectReviewStatus"},
    "SelfSubjectReviewStatus": {1: "userInfo UserInfo"},
    "UserInfo": {1: "username", 2: "uid", 3: "groups [string]", 4: "extra {ExtraValue}"},
    "ExtraValue": {1: "items [string]"},
}  # fmt: skip
_AUTHORIZATION_V1: Final = {
    "SelfSubjectAccessReview": {
        1: "metadata ObjectMeta", 2: "spec SelfSubjectAccessReviewSpec",
        3: "status SubjectAccessReviewStatus",
    },
    # Which of the two is set says what kind of request is asked about.
    "SelfSubjectAccessReviewSpec": {
        1: "resourceAttributes ResourceAttributes!",
        2: "nonResourceAttributes NonResourceAttributes!",
    },
    "ResourceAttributes": {
        1: "namespace", 2: "verb", 3: "group", 4: "version", 5: "resource", 6: "subresource",
        7: "name", 8: "fieldSelector FieldSelectorAttributes",
        9: "labelSelector LabelSelectorAttributes",
    },
    "FieldSelectorAttributes": {
        1: "rawSelector", 2: "requirements [FieldSelectorRequirement]",
    },
    "LabelSelectorAttributes": {
        1: "rawSelector", 2: "requirements [LabelSelectorRequirement]",
    },
    "NonResourceAttributes": {1: "path", 2: "verb"},
    "SubjectAccessReviewStatus": {
        1: "allowed bool", 2: "reason", 3: "evaluationError", 4: "denied bool",
    },
    "SelfSubjectRulesReview": {
        1: "metadata ObjectMeta", 2: "spec SelfSubjectRulesReviewSpec",
        3: "status SubjectRulesReviewStatus",
    },
    "SelfSubjectRulesReviewSpec": {1: "namespace"},
    "SubjectRulesReviewStatus": {
        1: "resourceRules [ResourceRule]", 2: "nonResourceRules [NonResourceRule]",
        3: "incomplete bool", 4: "evaluationError",
    },
    "ResourceRule": {
        1: "verbs [string]", 2: "apiGroups [string]", 3: "resources [string]",
        4: "resourceNames [string]",
    },
    "NonResourceRule": {1: "verbs [string]", 2: "nonResourceURLs [string]"},
}  # fmt: skip
_COORDINATION_V1: Final = {
    "Lease": {1: "metadata ObjectMeta", 2: "spec LeaseSpec"},
    "LeaseSpec": {
        # Leader election releases a lease by writing holderIdentity: "".
        1: "holderIdentity!", 2: "leaseDurationSeconds int32", 3: "acquireTime MicroTime",
        4: "renewTime MicroTime", 5: "leaseTransitions int32", 6: "strategy",
        7: "preferredHolder",
    },
}  # fmt: skip
_DISCOVERY_V1: Final = {
    "EndpointSlice": {
        1: "metadata ObjectMeta", 2: "endpoints [Endpoint]", 3: "ports [EndpointPort]",
        4: "addressType",
    },
    "Endpoint": {
        1: "addresses [string]", 2: "conditions EndpointConditions", 3: "hostname",
        4: "targetRef ObjectReference", 5: "deprecatedTopology {string}", 6: "nodeName",
        7: "zone", 8: "hints EndpointHints",
    },
    "EndpointConditions": {1: "ready bool!", 2: "serving bool!", 3: "terminating bool!"},
    "EndpointHints": {1: "forZones [ForZone]"},
    "ForZone": {1: "name"},
    "EndpointPort": {1: "name", 2: "protocol", 3: "port int32", 4: "appProtocol"},
}  # fmt: skip
_NETWORKING_V1: Final = {
    "Ingress": {1: "metadata ObjectMeta", 2: "spec IngressSpec", 3: "status IngressStatus"},
    "IngressSpec": {
        1: "defaultBackend IngressBackend", 2: "tls [IngressTLS]", 3: "rules [IngressRule]",
        4: "ingressClassName",
    },
    "IngressBackend": {3: "resource TypedLocalObjectReference", 4: "service IngressServiceBackend"},
    "IngressServiceBackend": {1: "name", 2: "port ServiceBackendPort"},
    "ServiceBackendPort": {1: "name", 2: "number int32?"},
    "IngressTLS": {1: "hosts [string]", 2: "secretName"},
    "IngressRule": {1: "host", 2: "...IngressRuleValue"},
    "IngressRuleValue": {1: "http HTTPIngressRuleValue"},
    "HTTPIngressRuleValue": {1: "paths [HTTPIngressPath]"},
    "HTTPIngressPath": {1: "path", 2: "backend IngressBackend", 3: "pathType"},
    "IngressStatus": {1: "loadBalancer IngressLoadBalancerStatus"},
    "IngressLoadBalancerStatus": {1: "ingress [IngressLoadBalancerIngress]"},
    "IngressLoadBalancerIngress": {1: "ip", 2: "hostname", 4: "ports [IngressPortStatus]"},
    "IngressPortStatus": {1: "port int32", 2: "protocol", 3: "error"},
}  # fmt: skip
_POLICY_V1: Final = {
    "PodDisruptionBudget": {
        1: "metadata ObjectMeta", 2: "spec PodDisruptionBudgetSpec",
        3: "status PodDisruptionBudgetStatus",
    },
    "PodDisruptionBudgetSpec": {
        1: "minAvailable IntOrString", 2: "selector LabelSelector",
        3: "maxUnavailable IntOrString", 4: "unhealthyPodEvictionPolicy",
    },
    "PodDisruptionBudgetStatus": {
        1: "observedGeneration int64?", 2: "disruptedPods {Time}", 3: "disruptionsAllowed int32",
        4: "currentHealthy int32", 5: "desiredHealthy int32", 6: "expectedPods int32",
        7: "conditions [Condition]",
    },
    "Eviction": {1: "metadata ObjectMeta", 2: "deleteOptions DeleteOptions"},
}  # fmt: skip
_SCHEDULING_V1: Final = {
    "PriorityClass": {
        1: "metadata ObjectMeta", 2: "value int32", 3: "globalDefault bool", 4: "description",
        5: "preemptionPolicy",
    },
}  # fmt: skip
_ADMISSIONREGISTRATION_V1: Final = {
    "MutatingWebhookConfiguration": {1: "metadata ObjectMeta", 2: "webhooks [MutatingWebhook]"},
    "ValidatingWebhookConfiguration": {
        1: "metadata ObjectMeta", 2: "webhooks [ValidatingWebhook]",
    },
    "MutatingWebhook": {
        1: "name", 2: "clientConfig WebhookClientConfig", 3: "rules [RuleWithOperations]",
        4: "failurePolicy", 5: "namespaceSelector LabelSelector", 6: "sideEffects",
        7: "timeoutSeconds int32", 8: "admissionReviewVersions [string]", 9: "matchPolicy",
        10: "reinvocationPolicy", 11: "objectSelector LabelSelector",
        12: "matchConditions [MatchCondition]",
    },
    "ValidatingWebhook": {
        1: "name", 2: "clientConfig WebhookClientConfig", 3: "rules [RuleWithOperations]",
        4: "failurePolicy", 5: "namespaceSelector LabelSelector", 6: "sideEffects",
        7: "timeoutSeconds int32", 8: "admissionReviewVersions [string]", 9: "matchPolicy",
        10: "objectSelector LabelSelector", 11: "matchConditions [MatchCondition]",
    },
    "WebhookClientConfig": {1: "service ServiceReference", 2: "caBundle bytes", 3: "url"},
    "ServiceReference": {1: "namespace", 2: "name", 3: "path", 4: "port int32"},
    "RuleWithOperations": {1: "operations [string]", 2: "...Rule"},
    "Rule": {
        1: "apiGroups [string]", 2: "apiVersions [string]", 3: "resources [string]", 4: "scope",
    },
    "MatchCondition": {1: "name", 2: "expression"},
}  # fmt: skip
_PACKAGES: Final = {
    "k8s.io.apimachinery.pkg.apis.meta.v1": _META_V1,
    "k8s.io.apimachinery.pkg.runtime": _RUNTIME,
    "k8s.io.apimachinery.pkg.api.resource": _RESOURCE,
    "k8s.io.apimachinery.pkg.util.intstr": _INTSTR,
    "k8s.io.api.core.v1": _CORE_V1,
    "k8s.io.api.apps.v1": _APPS_V1,
    "k8s.io.api.autoscaling.v1": _AUTOSCALING_V1,
    "k8s.io.api.batch.v1": _BATCH_V1,
    "k8s.io.api.rbac.v1": _RBAC_V1,
    "k8s.io.api.authentication.v1": _AUTHENTICATION_V1,
    "k8s.io.api.authorization.v1": _AUTHORIZATION_V1,
    "k8s.io.api.coordination.v1": _COORDINATION_V1,
    "k8s.io.api.discovery.v1": _DISCOVERY_V1,
    "k8s.io.api.networking.v1": _NETWORKING_V1,
    "k8s.io.api.policy.v1": _POLICY_V1,
    "k8s.io.api.scheduling.v1": _SCHEDULING_V1,
    "k8s.io.api.admissionregistration.v1": _ADMISSIONREGISTRATION_V1,
}
#: The objects a protobuf body may hold: apiVersion -> kinds (each kind is its message's name).
#: DeleteOptions is known to every group version, as client-go encodes it for each.
KINDS: Final = {
    "v1": ("Namespace", "ConfigMap", "Secret", "ServiceAccount", "Service", "ResourceQuota"),
    "apps/v1": ("Deployment",),
    "autoscaling/v1": ("Scale",),
    "batch/v1": ("Job", "CronJob"),
    "rbac.authorization.k8s.io/v1": ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"),
    "authentication.k8s.io/v1": ("TokenRequest", "SelfSubjectReview"),
    "authorization.k8s.io/v1": ("SelfSubjectAccessReview", "SelfSubjectRulesReview"),
    "coordination.k8s.io/v1": ("Lease",),
    "discovery.k8s.io/v1": ("EndpointSlice",),
    "networking.k8s.io/v1": ("Ingress",),
    "policy/v1": ("PodDisruptionBudget", "Eviction"),
    "scheduling.k8s.io/v1": ("PriorityClass",),
    "admissionregistration.k8s.io/v1": (
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ),
}

_VARINT_KINDS: Final = frozenset({"bool", "int32", "int64"})
_SCALAR_KINDS: Final = _VARINT_KINDS | {"string", "bytes", "json"}


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a message: its JSON name and how its value is read."""

    #: The JSON name; empty for a struct embedded inline.
    name: str
    #: A scalar kind (``string``, ``bytes``, ``bool``, ``int32``, ``int64``, ``json``) or the
    #: name of a message in the schema.
    kind: str
    repeated: bool = False
    #: A ``map<string, kind>``: repeated entries of key 1 and value 2.
    map: bool = False
    #: Keep the zero value (a pointer field whose zero means something).
    keep_zero: bool = False
    #: Drop a zero int (a non-pointer ``omitempty`` int).
    omit_zero: bool = False

    @classmethod
    def parse(cls, spec: str) -> Field:
        """A field from its line in the schema table (``"ports [ContainerPort]"``)."""
        flag = spec[-1] if spec[-1] in "!?" else ""
        spec = spec.removesuffix(flag)
        if spec.startswith("..."):
            name, kind = "", spec[3:]
        else:
            name, _, kind = spec.partition(" ")
        kind = kind or "string"
        repeated, is_map = kind.startswith("["), kind.startswith("{")
        if repeated or is_map:
            kind = kind[1:-1]
        return cls(name, kind, repeated, is_map, keep_zero=flag == "!", omit_zero=flag == "?")

    @property
    def wire_type(self) -> int:
        return VARINT if self.kind in _VARINT_KINDS and not self.map else LEN


@dataclass(frozen=True, slots=True)
class Message:
    """A message type: its full protobuf name (for errors) and its fields by number."""

    name: str
    fields: Mapping[int, Field]


def _compile() -> dict[str, Message]:
    schema: dict[str, Message] = {}
    for package, table in _PACKAGES.items():
        for name, fields in table.items():
            parsed = {number: Field.parse(spec) for number, spec in sorted(fields.items())}
            schema[name] = Message(f"{package}.{name}", parsed)
    # A typo in the table would otherwise only show when a body used the field.
    for message in schema.values():
        for field in message.fields.values():
            if field.kind not in _SCALAR_KINDS and field.kind not in schema:
                raise LookupError(f"{message.name}: unknown message {field.kind!r}")
            if field.omit_zero and field.kind not in ("int32", "int64"):
                raise ValueError(f"{message.name}.{field.name}: only ints are omit-when-zero")
    return schema


#: Every message this module decodes, by its short name.
SCHEMA: Final = _compile()


# -- decoding ----------------------------------------------------------------------------------


def decode_object(body: bytes) -> dict[str, Any]:
    """Decode a protobuf request body into the dict its JSON form would give.

    Args:
        body: The whole body: ``k8s\\x00`` and a ``runtime.Unknown``.

    Returns:
        The object, with ``apiVersion`` and ``kind`` from the envelope.

    Raises:
        ProtobufError: The body is not a Kubernetes protobuf envelope, holds a kind this server
            does not decode, or a field this module does not know, or is malformed.
    """
    if not body.startswith(MAGIC):
        raise ProtobufError(
            "it does not start with the 4 bytes k8s\\x00 of a Kubernetes protobuf envelope"
        )
    envelope = _collect(SCHEMA["Unknown"], body[len(MAGIC) :], "the envelope")
    type_meta = _decode(SCHEMA["TypeMeta"], b"".join(_chunks(envelope, 1)), "typeMeta")
    api_version, kind = type_meta.get("apiVersion", ""), type_meta.get("kind", "")
    for number, name in ((3, "contentEncoding"), (4, "contentType")):
        value = _string(envelope[number][-1], name) if number in envelope else ""
        if value not in ("", MEDIA_TYPE):
            raise ProtobufError(f'the envelope\'s {name} is "{value}"; only protobuf is decoded')
    if kind != "DeleteOptions" and kind not in KINDS.get(api_version, ()):
        raise ProtobufError(
            f'it holds a {kind or "(no kind)"} of apiVersion "{api_version}", which this API '
            "server does not decode from protobuf"
        )
    raw = b"".join(_chunks(envelope, 2))
    return {"apiVersion": api_version, "kind": kind, **_decode(SCHEMA[kind], raw, "")}


def decode_message(name: str, data: bytes) -> Any:
    """Decode one message of the schema as JSON (a dict, or a string for a Time, ...).

    Args:
        name: The message's name in :data:`SCHEMA`, e.g. ``"ObjectMeta"`` or ``"Time"``.
        data: The message's bytes, without an envelope.

    Returns:
        What the message is in JSON; ``None`` for a zero Time.

    Raises:
        ProtobufError: The data is malformed or holds a field the schema does not know.
    """
    return _decode(SCHEMA[name], data, "")


def _chunks(values: dict[int, list[int | bytes]], number: int) -> list[bytes]:
    return [value for value in values.get(number, ()) if isinstance(value, bytes)]


def _collect(message: Message, data: bytes, where: str) -> dict[int, list[int | bytes]]:
    """The values of each field of one message, checked against its schema."""
    values: dict[int, list[int | bytes]] = {}
    for number, wire_type, value in _records(message, data, where):
        field = message.fields.get(number)
        if field is None:
            raise ProtobufError(
                f"field {number} of {message.name} (at {where}) is not one this API server knows"
            )
        packed = field.repeated and field.kind in _VARINT_KINDS and wire_type == LEN
        if wire_type != field.wire_type and not packed:
            raise ProtobufError(
                f"field {number} ({field.name or field.kind}) of {message.name} (at {where}) "
                f"has wire type {_WIRE_NAMES.get(wire_type, wire_type)}, not "
                f"{_WIRE_NAMES[field.wire_type]}"
            )
        values.setdefault(number, []).append(value)
    return values


def _records(message: Message, data: bytes, where: str) -> Iterator[tuple[int, int, int | bytes]]:
    try:
        yield from iter_fields(data)
    except ProtobufError as error:
        raise ProtobufError(f"{error.problem} (in {message.name} at {where})") from None


def _decode(message: Message, data: bytes, path: str) -> Any:
    """One message as JSON: a dict, or what a special message (Time, Quantity, ...) stands for."""
    values = _collect(message, data, path or "the object")
    out: dict[str, Any] = {}
    for number, field in message.fields.items():
        if number not in values:
            continue
        where = f"{path}.{field.name}".lstrip(".") if field.name else path
        value = _field_value(message, field, values[number], where)
        if not _kept(field, value):
            continue
        if field.name:
            out[field.name] = value
        else:
            out.update(value)
    shape = _SHAPES.get(message.name.rpartition(".")[2])
    return shape(out, path) if shape is not None else out


def _field_value(message: Message, field: Field, values: list[int | bytes], where: str) -> Any:
    if field.map:
        entry = Message(
            f"{message.name}.{field.name} entry",
            {1: Field("key", "string"), 2: Field("value", field.kind)},
        )
        mapping = {}
        for chunk in values:
            assert isinstance(chunk, bytes)  # _collect checked the wire type
            parts = _collect(entry, chunk, where)
            key = _single(entry.fields[1], parts.get(1, []), where)
            mapping[key] = _single(entry.fields[2], parts.get(2, []), f"{where}[{key}]")
        return mapping
    if not field.repeated:
        return _single(field, values, where)
    if field.kind in _SCALAR_KINDS:
        items: list[int | bytes] = []
        for value in values:
            if isinstance(value, bytes) and field.kind in _VARINT_KINDS:
                items.extend(_packed(value, where))  # several varints in one record
            else:
                items.append(value)
        return [_scalar(field.kind, item, where) for item in items]
    return [
        _decode(SCHEMA[field.kind], value, f"{where}[{index}]")
        for index, value in enumerate(values)
        if isinstance(value, bytes)
    ]


def _single(field: Field, values: list[int | bytes], where: str) -> Any:
    if field.kind in _SCALAR_KINDS:
        # The last value wins, as protobuf parsers do for a field that is not repeated.
        return _scalar(field.kind, values[-1] if values else _zero(field.kind), where)
    # A message sent more than once is merged, which decoding the concatenation does.
    return _decode(SCHEMA[field.kind], b"".join(v for v in values if isinstance(v, bytes)), where)


def _zero(kind: str) -> int | bytes:
    return 0 if kind in _VARINT_KINDS else b""


def _packed(data: bytes, where: str) -> list[int]:
    numbers, position = [], 0
    while position < len(data):
        try:
            number, position = read_varint(data, position)
        except ProtobufError as error:
            raise ProtobufError(f"{error.problem} (in the packed list at {where})") from None
        numbers.append(number)
    return numbers


def _scalar(kind: str, value: int | bytes, where: str) -> Any:
    if isinstance(value, int):
        if kind == "bool":
            return value != 0
        return int32(value) if kind == "int32" else int64(value)
    if kind == "bytes":
        return base64.b64encode(value).decode("ascii")
    text = _string(value, where)
    if kind == "string":
        return text
    if not text:  # json: an empty RawExtension or FieldsV1
        return None
    try:
        return json.loads(text)
    except ValueError as error:
        raise ProtobufError(f"{where} does not hold JSON: {error}") from None


def _string(value: int | bytes, where: str) -> str:
    assert isinstance(value, bytes)  # _collect checked the wire type
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtobufError(f"{where} is not valid UTF-8") from None


def _kept(field: Field, value: Any) -> bool:
    """Whether a decoded value is one encoding/json would have written."""
    if value is None:
        return False
    if field.keep_zero:
        return True
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return not (field.omit_zero and value == 0)
    return value not in ("", [], {})


# -- the messages that stand for something else in JSON ----------------------------------------

#: Go's zero time.Time (January 1, year 1, UTC) in Unix seconds; metav1.Time encodes it so when
#: it does not leave the message empty.
_GO_ZERO_TIME: Final = -62135596800
_EPOCH: Final = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def _timestamp(fields: dict[str, Any], path: str, *, micro: bool) -> str | None:
    seconds, nanos = fields.get("seconds", 0), fields.get("nanos", 0)
    if not fields or seconds == _GO_ZERO_TIME:
        return None
    if not 0 <= nanos < 1_000_000_000:
        raise ProtobufError(f"the time at {path} has {nanos} nanoseconds")
    try:
        moment = _EPOCH + datetime.timedelta(seconds=seconds, microseconds=nanos // 1000)
    except OverflowError:
        raise ProtobufError(f"the time at {path} is out of range") from None
    # metav1.Time marshals as RFC 3339 in whole seconds, MicroTime with six decimals.
    fraction = f".{moment.microsecond:06d}" if micro else ""
    return f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S}{fraction}Z"


def go_duration(nanoseconds: int) -> str:
    """A duration as Go's ``time.Duration.String`` writes it: ``1h0m0s``, ``1.5s``, ``2ms``.

    metav1.Duration appears so in JSON.
    """
    sign, value = ("-", -nanoseconds) if nanoseconds < 0 else ("", nanoseconds)
    if value == 0:
        return "0s"

    def decimal(whole: int, fraction: int, digits: int) -> str:
        text = f"{fraction:0{digits}d}".rstrip("0")
        return f"{whole}.{text}" if text else str(whole)

    if value < 1_000:
        return f"{sign}{value}ns"
    if value < 1_000_000:
        return f"{sign}{decimal(value // 1_000, value % 1_000, 3)}µs"
    if value < 1_000_000_000:
        return f"{sign}{decimal(value // 1_000_000, value % 1_000_000, 6)}ms"
    seconds, fraction = divmod(value, 1_000_000_000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    text = decimal(seconds, fraction, 9) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return sign + text


def _int_or_string(fields: dict[str, Any], path: str) -> int | str:
    kind = fields.get("type", 0)
    if kind not in (0, 1):
        raise ProtobufError(f"the IntOrString at {path} has type {kind}, neither 0 nor 1")
    return str(fields.get("strVal", "")) if kind else int(fields.get("intVal", 0))


_SHAPES: Final[dict[str, Callable[[dict[str, Any], str], Any]]] = {
    "Time": lambda fields, path: _timestamp(fields, path, micro=False),
    "MicroTime": lambda fields, path: _timestamp(fields, path, micro=True),
    "Duration": lambda fields, _: go_duration(fields.get("duration", 0)),
    "IntOrString": _int_or_string,
    # resource.Quantity marshals its canonical string; Go always writes one ("0" for zero).
    "Quantity": lambda fields, _: fields.get("string", "0"),
    "RawExtension": lambda fields, _: fields.get("raw"),
    "FieldsV1": lambda fields, _: fields.get("raw"),
    # authentication/v1 ExtraValue is a []string with a message of its own in protobuf.
    "ExtraValue": lambda fields, _: fields.get("items", []),
}
