"""A local copy of one kind of object, kept current by a list and then a watch.

This is client-go's reflector, reduced to what the manager needs. :meth:`Reflector.run` lists
the objects, reports itself started, and then watches from the list's resource version; when
the server ends the watch it watches again from the last version seen (bookmarks keep that
version fresh), and when the version has expired (``410 Gone``) or the connection failed it
lists again, after a backoff that grows to :data:`MAX_BACKOFF`. After every change the
``on_change`` callback runs, so the owner can recompute what depends on the objects.

Only what ``extract`` returns is kept: a pod's addresses, not its whole spec. Objects for which
it returns None are not kept at all.

A namespace that does not exist (yet) has no objects: the reflector starts empty and keeps
trying. A first list that RBAC forbids is not retried: :meth:`Reflector.run` raises
:class:`~manager.kube.Forbidden` to whoever started it, who decides what else to do (the
cluster-info code falls back from nodes to pods that way). Later failures are logged and
retried.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import anyio

from manager import kube

if TYPE_CHECKING:
    from collections.abc import Callable

    from anyio.abc import TaskStatus

log = logging.getLogger(__name__)

#: The first wait before listing again after a failure, in seconds; it doubles each time.
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0

type Key = tuple[str, str]


class Reflector[T]:
    """The objects of one kind, in one namespace or all, as ``extract`` sees them.

    Attributes:
        items: The current objects' extracts, by ``(namespace, name)``.
    """

    def __init__(
        self,
        kubernetes: kube.Kubernetes,
        kind: kube.Kind,
        extract: Callable[[kube.Object], T | None],
        on_change: Callable[[], None],
        *,
        namespace: str | None = None,
        field_selector: str = "",
    ) -> None:
        self._kubernetes = kubernetes
        self._kind = kind
        self._extract = extract
        self._on_change = on_change
        self._namespace = namespace
        self._field_selector = field_selector
        self._scope: anyio.CancelScope | None = None
        self.items: dict[Key, T] = {}

    @property
    def name(self) -> str:
        where = f" in {self._namespace}" if self._namespace else ""
        selector = f" ({self._field_selector})" if self._field_selector else ""
        return f"{self._kind.plural}{where}{selector}"

    def stop(self) -> None:
        """End :meth:`run`; the items stay as they were."""
        if self._scope is not None:
            self._scope.cancel()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """List, report started, then follow the changes until cancelled or stopped.

        Raises:
            kube.Forbidden: The first list was forbidden (before ``started``).
        """
        with anyio.CancelScope() as self._scope:
            backoff = FIRST_BACKOFF
            started = False
            while True:
                try:
                    version = await self._relist()
                    if not started:
                        task_status.started()
                        started = True
                    backoff = FIRST_BACKOFF
                    await self._follow(version)
                except kube.Forbidden:
                    if not started:
                        raise
                    log.warning("%s: no longer allowed to watch; retrying", self.name)
                except kube.NotFound:
                    # The namespace does not exist (yet). kube-apiserver lists nothing then,
                    # but some servers answer 404; either way there is nothing to keep.
                    if self.items:
                        self.items = {}
                        self._on_change()
                    if not started:
                        log.info("%s: the namespace does not exist (yet)", self.name)
                        task_status.started()
                        started = True
                except kube.Gone:
                    log.debug("%s: the watch's version expired; listing again", self.name)
                    continue
                except kube.KubernetesError as error:
                    log.warning("%s: %s; listing again in %.1f s", self.name, error, backoff)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    async def _relist(self) -> str:
        objects, version = await self._kubernetes.list(
            self._kind, self._namespace, field_selector=self._field_selector
        )
        items: dict[Key, T] = {}
        for obj in objects:
            extract = self._extract(obj)
            if extract is not None:
                items[_key(obj)] = extract
        if items != self.items:
            self.items = items
            self._on_change()
        log.debug("%s: listed %d at version %s", self.name, len(items), version)
        return version

    async def _follow(self, version: str) -> None:
        while True:
            async with self._kubernetes.watch(
                self._kind, self._namespace, version, field_selector=self._field_selector
            ) as events:
                async for event in events:
                    version = _version(event.object) or version
                    if event.type != "BOOKMARK":
                        self._apply(event)
            log.debug("%s: the server ended the watch; resuming at %s", self.name, version)

    def _apply(self, event: kube.WatchEvent) -> None:
        key = _key(event.object)
        before = self.items.get(key)
        after = None if event.type == "DELETED" else self._extract(event.object)
        if after is None:
            self.items.pop(key, None)
        else:
            self.items[key] = after
        if after != before:
            self._on_change()


def _key(obj: kube.Object) -> Key:
    metadata: dict[str, Any] = obj.get("metadata") or {}
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")


def _version(obj: kube.Object) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")
