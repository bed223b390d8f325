"""``pods/proxy``: one plain HTTP request relayed to a port of the pod.

The target is ``[SCHEME:]NAME[:PORT]`` as kube-apiserver's ``ResourceLocation`` reads it (the
port defaults to the pod's first declared container port, else 80), and the rest of the path,
or the ``path`` query parameter, is the path on the pod. The request goes to the pod's IP
without the headers that belong to one connection or that authenticated the client to the API
server, and the pod's answer comes back as it is, streamed. Upgrades (WebSocket through the
proxy) are not relayed; a pod that cannot be reached is ``503 ServiceUnavailable``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from yarl import URL

from sandbox.apiserver import errors
from sandbox.node.runtime._pods import READ_SIZE, pod_ip, pod_name

if TYPE_CHECKING:
    from collections.abc import Mapping

#: Headers that belong to one connection (RFC 9110 section 7.6.1), not to the relayed request.
HOP_BY_HOP = frozenset(
    [
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
    ]
)


async def serve_proxy(http: web.Request, pod: dict[str, Any]) -> web.StreamResponse:
    """Answer a ``pods/proxy`` request with the pod's answer."""
    if http.headers.get("Upgrade"):
        raise errors.bad_request("the sandbox's pod proxy does not upgrade connections")
    scheme, port, path = _proxy_target(http, pod)
    ip = pod_ip(pod)
    if not ip:
        raise errors.APIError(
            503, "ServiceUnavailable", f'pod "{pod_name(pod)}" has no IP address yet'
        )
    host = f"[{ip}]" if ":" in ip else ip
    query = [(k, v) for k, v in http.query.items() if k != "path"]
    url = URL(f"{scheme}://{host}:{port}{path}", encoded=True)
    headers = {
        k: v
        for k, v in http.headers.items()
        if k.lower() not in HOP_BY_HOP
        and k.lower() != "authorization"
        and not k.lower().startswith("impersonate-")
    }
    try:
        return await _relay(http, url, query, headers)
    except (aiohttp.ClientError, OSError) as error:
        raise errors.APIError(
            503, "ServiceUnavailable", f"error trying to reach service: {error}"
        ) from error


def _proxy_target(http: web.Request, pod: Mapping[str, Any]) -> tuple[str, int, str]:
    """Scheme, port and path of a pod proxy request (kube-apiserver's ``ResourceLocation``:
    the port defaults to the first declared container port, else 80)."""
    # /api/v1/namespaces/NS/pods/[SCHEME:]NAME[:PORT]/proxy[/PATH]
    parts = http.raw_path.split("?", 1)[0].split("/")
    named = len(parts) >= 8 and parts[3] == "namespaces" and parts[5] == "pods"
    target = parts[6] if named else pod_name(pod)
    words = target.split(":")
    scheme = words[0] if len(words) == 3 else "http"
    port_text = words[-1] if len(words) >= 2 else ""
    rest = "/".join(parts[8:]) if named else ""
    path = "/" + rest if rest else http.query.get("path", "/")
    if not path.startswith("/"):
        path = "/" + path
    if not port_text:
        for container in pod.get("spec", {}).get("containers") or []:
            if container.get("ports"):
                port_text = str(container["ports"][0].get("containerPort", ""))
                break
    if scheme not in ("http", "https") or not (port_text or "80").isdigit():
        raise errors.bad_request(f"invalid pod proxy target {target!r}")
    return scheme, int(port_text or 80), path


async def _relay(
    http: web.Request, url: URL, query: list[tuple[str, str]], headers: dict[str, str]
) -> web.StreamResponse:
    body = http.content if http.can_read_body else None
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with (
        aiohttp.ClientSession(auto_decompress=False, timeout=timeout) as session,
        session.request(
            http.method,
            url,
            params=query,
            headers=headers,
            data=body,
            allow_redirects=False,
            ssl=False,
        ) as answer,
    ):
        response = web.StreamResponse(status=answer.status, reason=answer.reason)
        for name, value in answer.headers.items():
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                response.headers.add(name, value)
        if "Content-Length" in answer.headers:
            response.content_length = int(answer.headers["Content-Length"])
        await response.prepare(http)
        async for chunk in answer.content.iter_chunked(READ_SIZE):
            await response.write(chunk)
        await response.write_eof()
        return response
