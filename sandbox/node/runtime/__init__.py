"""The kubelet's side of a pod's subresources: logs, exec, port-forward and proxy.

Upstream, kube-apiserver checks a request for ``pods/log``, ``pods/exec`` or
``pods/portforward``, then proxies it to the kubelet of the pod's node, which asks the container
runtime: containerd reads the container's log file, enters the container for an exec, dials
the port inside the pod's network namespace. The sandbox's API server and nodes share one
process and one host, so :class:`PodRuntime` does that kubelet part in place:
``APIServer._pod_runtime`` authorizes the request, fetches the pod and hands the aiohttp
request to the method named after the subresource. What the node knows about its containers
comes through :class:`Containers`, which the kubelet implements.

- **log** (``_logs``) reads the container's CRI log file and answers ``text/plain``, chunked,
  followed if asked; :class:`LogFormatter` is the parsing and filtering, with no I/O.
- **exec** (``_exec``) speaks the WebSocket remote-command protocol and runs the command inside
  the container through the namespace launcher (``_commands``), as ``runc exec`` does.
- **portforward** (``_portforward``) speaks the WebSocket port-forward protocol and dials the
  pod's IP; it is the project's default transport, built for throughput.
- exec and port-forward share the channel WebSocket (``_channels``).
- **proxy** (``_proxy``) relays one plain HTTP request to the pod; **attach**, **eviction** and
  **ephemeralcontainers** answer clear errors (``_runtime``).

Errors before a stream starts are ``APIError``\\ s, worded as kube-apiserver and the kubelet
word them, which the API server turns into ``Status`` responses; once a WebSocket is open they
travel on its error channel.
"""

from __future__ import annotations

from sandbox.node.runtime._commands import find_executable
from sandbox.node.runtime._exec import exit_status
from sandbox.node.runtime._logs import LogFormatter, LogOptions, rfc3339_nanoseconds, tail_offset
from sandbox.node.runtime._pods import Containers
from sandbox.node.runtime._portforward import parse_ports
from sandbox.node.runtime._runtime import PodRuntime

__all__ = [
    "Containers",
    "LogFormatter",
    "LogOptions",
    "PodRuntime",
    "exit_status",
    "find_executable",
    "parse_ports",
    "rfc3339_nanoseconds",
    "tail_offset",
]
