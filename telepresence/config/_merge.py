"""The configuration in effect: the user's ``config.yml`` over what the traffic-manager pushes.

The traffic-manager pushes the Helm chart's ``client`` block (``GetClientConfig``) so that an
administrator can set, say, ``dns.excludeSuffixes`` once for every user. The user's own file
still wins: per key, a value ``config.yml`` wrote is kept, and a pushed value fills only a key
the file left out (``model_fields_set`` of each section tells them apart). A key neither sets
keeps the client's default.

The manager leaves out what its chart does not set: an empty list or an absent duration in
the message means "not pushed", never "empty".
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from telepresence.config._file import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from google.protobuf.duration_pb2 import Duration
    from pydantic import BaseModel

    from telepresence.config._model import Config, IPNetwork
    from telepresence.wire.proto import manager_pb2

__all__ = ["PUSHED", "effective"]

#: Where a malformed pushed value came from, for messages.
PUSHED = "the traffic-manager's client configuration"


def effective(local: Config, pushed: manager_pb2.ClientConfig) -> Config:
    """The configuration to use: ``local`` (as loaded from ``config.yml``) with the gaps
    filled by ``pushed``.

    The result's ``model_fields_set`` still names what ``config.yml`` set, so compute it from
    the loaded configuration each time the manager pushes, not from an earlier result.

    Raises:
        ConfigError: The manager pushed a subnet that is not one.
    """
    dns, routing, timeouts = pushed.dns, pushed.routing, pushed.timeouts
    lookup = _seconds(dns.lookup_timeout) if dns.HasField("lookup_timeout") else None
    pushed_timeouts = {
        field.name: _seconds(getattr(timeouts, field.name))
        for field in timeouts.DESCRIPTOR.fields
        if field.name in type(local.timeouts).model_fields and timeouts.HasField(field.name)
    }
    return _fill(
        local,
        {
            "dns": _fill(
                local.dns,
                {
                    "include_suffixes": list(dns.include_suffixes) or None,
                    "exclude_suffixes": list(dns.exclude_suffixes) or None,
                    "lookup_timeout": lookup,
                },
            ),
            "routing": _fill(
                local.routing,
                {
                    name: _networks(getattr(routing, name), f"routing.{field.alias}") or None
                    for name, field in type(local.routing).model_fields.items()
                    if name in routing.DESCRIPTOR.fields_by_name
                },
            ),
            "timeouts": _fill(local.timeouts, pushed_timeouts),
        },
        replace=True,
    )


def _fill[Section: BaseModel](
    section: Section, values: dict[str, Any], *, replace: bool = False
) -> Section:
    """``section`` with ``values`` for the fields it did not set (all of them if ``replace``:
    sub-sections, already merged); ``None`` is no value. The fields set stay the file's."""
    merged = dict(section)
    for name, value in values.items():
        if value is not None and (replace or name not in section.model_fields_set):
            merged[name] = value
    # model_copy(update=...) would count the pushed values as set by the file.
    return section.model_construct(_fields_set=set(section.model_fields_set), **merged)


def _seconds(duration: Duration) -> float:
    return duration.seconds + duration.nanos / 1e9


def _networks(pushed: Iterable[manager_pb2.IPNet], key: str) -> list[IPNetwork]:
    networks = []
    for index, ipnet in enumerate(pushed):
        try:
            networks.append(ipaddress.ip_network((ipaddress.ip_address(ipnet.ip), ipnet.mask)))
        except ValueError as error:
            raise ConfigError(f"{PUSHED}: {key}[{index}]: not a subnet ({error})") from error
    return networks
