"""Object storage with etcd's versioning model, and watches fed from it.

One counter versions every write, as etcd's revision does, so a ``resourceVersion`` orders
changes across all kinds. Each resource keeps the latest changes (``history`` of them) so
that a watch can resume from a version it saw; one older than that gets ``410 Gone``, as a
compacted etcd answers, and the client relists.

Stored objects are never mutated: a write stores a new dict. So a reader may hold or
serialise an object without copying, and each change is encoded to JSON once, however many
watchers it goes to.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from sandbox.apiserver import errors

if TYPE_CHECKING:
    import builtins
    from collections.abc import Iterator, Mapping

    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

Key = tuple[str, str]  # (group, plural)
Obj = dict[str, Any]

#: Changes each resource keeps for resuming watches (kube-apiserver's watch cache keeps 100).
DEFAULT_HISTORY = 1000
#: Events a watcher may fall behind by before the server ends its watch (the client rewatches).
WATCH_BUFFER = 10_000


@dataclass(slots=True)
class Change:
    """One write: ``type`` is ADDED, MODIFIED or DELETED; ``previous`` the object before it."""

    resource_version: int
    type: str
    object: Obj
    previous: Obj | None
    _encoded: bytes | None = field(default=None, repr=False)

    def encoded(self) -> bytes:
        """The watch event line, encoded once for every watcher that gets it."""
        if self._encoded is None:
            self._encoded = json_line({"type": self.type, "object": self.object})
        return self._encoded


def json_line(event: Mapping[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


Filter = Callable[[Obj], bool]


def accept_all(obj: Obj) -> bool:
    """The filter of a list or watch without selectors."""
    return True


class Watcher:
    """One watch: changes to one resource, in one namespace or all, through a filter."""

    def __init__(self, store: Store, key: Key, namespace: str | None, accept: Filter) -> None:
        self._store = store
        self.key = key
        self.namespace = namespace
        self.accept = accept
        self.overflowed = False
        send, receive = anyio.create_memory_object_stream[tuple[str, Obj, Change | None]](
            WATCH_BUFFER
        )
        self._send: MemoryObjectSendStream[tuple[str, Obj, Change | None]] = send
        self.events: MemoryObjectReceiveStream[tuple[str, Obj, Change | None]] = receive

    def offer(self, change: Change) -> None:
        """Queue the event this change means to this watcher, if any (see :meth:`translate`)."""
        event = self.translate(change)
        if event is None:
            return
        try:
            self._send.send_nowait(event)
        except anyio.WouldBlock:
            # Too far behind: end the watch, as kube-apiserver does; the client resumes.
            self.overflowed = True
            self._end()
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    def translate(self, change: Change) -> tuple[str, Obj, Change | None] | None:
        """An object moving into the filter is ADDED for this watcher, out of it DELETED."""
        obj, previous = change.object, change.previous
        namespace = obj.get("metadata", {}).get("namespace")
        if self.namespace is not None and namespace != self.namespace:
            return None
        if self.accept is accept_all:
            return (change.type, obj, change)
        now = self.accept(obj)
        if change.type == "MODIFIED" and previous is not None:
            before = self.accept(previous)
            if now and before:
                return ("MODIFIED", obj, change)
            if now:
                return ("ADDED", obj, None)
            if before:
                return ("DELETED", obj, None)
            return None
        return (change.type, obj, change) if now else None

    def _end(self) -> None:
        """No more events: the reader gets EndOfStream after the ones queued."""
        self._send.close()
        self._store._watchers.get(self.key, set()).discard(self)

    def close(self) -> None:
        """The reader is done with it."""
        self._end()
        self.events.close()


class Store:
    """Objects by resource, namespace and name, versioned by one counter."""

    def __init__(self, *, history: int = DEFAULT_HISTORY) -> None:
        self.resource_version = 1
        self._objects: dict[Key, dict[tuple[str, str], Obj]] = {}
        self._history: dict[Key, deque[Change]] = {}
        self._compacted: dict[Key, int] = {}
        self._history_size = history
        self._watchers: dict[Key, set[Watcher]] = {}
        self._uids: dict[str, tuple[Key, str, str]] = {}
        #: Called after every write, e.g. by the garbage collector and the CRD registrar.
        self.listeners: list[Callable[[Key, Change], None]] = []
        #: Called when a watch starts (tests wait for a client's watch with it).
        self.watch_listeners: list[Callable[[Watcher], None]] = []

    # -- reads --------------------------------------------------------------------------------

    def get(self, key: Key, namespace: str, name: str) -> Obj | None:
        return self._objects.get(key, {}).get((namespace, name))

    def list(self, key: Key, namespace: str | None = None) -> builtins.list[Obj]:
        """Objects in etcd's key order: by ``namespace/name`` as one string."""
        objects = self._objects.get(key, {})
        if namespace is None:
            return [objects[k] for k in sorted(objects, key=_etcd_order)]
        return [objects[k] for k in sorted(k for k in objects if k[0] == namespace)]

    def items(self, key: Key) -> Iterator[tuple[tuple[str, str], Obj]]:
        yield from self._objects.get(key, {}).items()

    def resource_keys(self) -> builtins.list[Key]:
        return list(self._objects)

    def by_uid(self, uid: str) -> tuple[Key, str, str] | None:
        return self._uids.get(uid)

    # -- writes -------------------------------------------------------------------------------

    def _write(self, key: Key, kind: str, obj: Obj, previous: Obj | None) -> Obj:
        self.resource_version += 1
        metadata = obj.setdefault("metadata", {})
        metadata["resourceVersion"] = str(self.resource_version)
        change = Change(self.resource_version, kind, obj, previous)
        history = self._history.setdefault(key, deque())
        history.append(change)
        if len(history) > self._history_size:
            self._compacted[key] = history.popleft().resource_version
        for watcher in list(self._watchers.get(key, ())):
            watcher.offer(change)
        for listener in self.listeners:
            listener(key, change)
        return obj

    def create(self, key: Key, obj: Obj) -> Obj:
        metadata = obj["metadata"]
        slot = (metadata.get("namespace", ""), metadata["name"])
        objects = self._objects.setdefault(key, {})
        if slot in objects:
            raise KeyError(slot)
        objects[slot] = obj
        if uid := metadata.get("uid"):
            self._uids[uid] = (key, *slot)
        return self._write(key, "ADDED", obj, None)

    def update(self, key: Key, obj: Obj) -> Obj:
        metadata = obj["metadata"]
        slot = (metadata.get("namespace", ""), metadata["name"])
        objects = self._objects.setdefault(key, {})
        previous = objects[slot]
        objects[slot] = obj
        return self._write(key, "MODIFIED", obj, previous)

    def delete(self, key: Key, namespace: str, name: str) -> Obj:
        previous = self._objects[key].pop((namespace, name))
        self._uids.pop(previous.get("metadata", {}).get("uid", ""), None)
        # The DELETED event carries the object at the version of its deletion.
        final = {**previous, "metadata": dict(previous["metadata"])}
        return self._write(key, "DELETED", final, previous)

    # -- watches ------------------------------------------------------------------------------

    def watch(
        self,
        key: Key,
        namespace: str | None,
        accept: Filter,
        since: int | None,
    ) -> tuple[Watcher, builtins.list[tuple[str, Obj, Change | None]]]:
        """Start a watch; returns it with the events it must send first.

        ``since`` None means "from now, after the current state" (the caller sends the
        current objects as ADDED first); a number means every change after that version,
        or ``410 Gone`` when those have been compacted away.
        """
        if since is not None:
            self.check_not_compacted(key, since)
        watcher = Watcher(self, key, namespace, accept)
        backlog: builtins.list[tuple[str, Obj, Change | None]] = []
        if since is not None:
            for change in self._history.get(key, ()):
                if change.resource_version > since and (event := watcher.translate(change)):
                    backlog.append(event)
        self._watchers.setdefault(key, set()).add(watcher)
        for listener in self.watch_listeners:
            listener(watcher)
        return watcher, backlog

    def check_not_compacted(self, key: Key, version: int) -> None:
        compacted = self._compacted.get(key, 0)
        if version < compacted:
            raise errors.gone(f"too old resource version: {version} ({compacted + 1})")

    def close_watchers(self) -> None:
        for watchers in self._watchers.values():
            for watcher in list(watchers):
                watcher._end()


def parse_resource_version(text: str | None) -> int | None:
    """A client's ``resourceVersion``: None when absent or empty; ``BadRequest`` if not one."""
    if not text:
        return None
    try:
        version = int(text)
    except ValueError:
        raise errors.bad_request(
            f'Invalid value: "{text}": resourceVersion must be an integer'
        ) from None
    if version < 0 or not math.isfinite(version):
        raise errors.bad_request(f'Invalid value: "{text}": resourceVersion must be positive')
    return version


def _etcd_order(slot: tuple[str, str]) -> str:
    return f"{slot[0]}/{slot[1]}"
