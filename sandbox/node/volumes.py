"""A pod's volumes on a sandbox node: made under the pod's directory, bound into containers.

The sandbox's kubelet runs each container in a private mount namespace and bind-mounts each
:class:`Mount` there (``enter.py --bind``/``--ro-bind``); this module decides what those are,
as kubelet's volume plugins and ``makeMounts`` do:

- ``emptyDir``: a directory (mode 0777) that lives as long as the pod; ``medium: Memory``
  too is a plain directory here.
- ``configMap``, ``secret``, ``downwardAPI``, ``projected``: files written from the stored
  objects, laid out as kubelet's ``AtomicWriter`` lays them out (below), always mounted
  read-only. ``serviceAccountToken`` projections are tokens of the pod's service account,
  bound to the pod, issued by the API server's own signer.
- ``hostPath``: the host's path itself. The sandbox never changes the host's filesystem, so
  a path that does not exist is an error rather than created (``DirectoryOrCreate`` and
  ``FileOrCreate`` included).
- Anything else (``persistentVolumeClaim``, ``csi``, ``ephemeral``...) fails the pod's
  start with ``<kind> volumes are not supported by the sandbox``.

How files are written (``pkg/volume/util/atomic_writer.go``)
------------------------------------------------------------
Every write goes to a new directory named after the time (``..2024_05_01_10_00_00.x1y2``);
``..data`` is a symlink to it, replaced with a single ``rename(2)`` of ``..data_tmp``; the
names a program sees (``key``) are symlinks to ``..data/key``. A program reading a volume
therefore sees either the old set of files or the new one, never a mix, and a program
watching ``..data`` (as many config reloaders do) sees one change per update. A volume
whose contents did not change is not rewritten.

:meth:`Volumes.refresh` rewrites the API-backed volumes from the objects as they are now
(kubelet does it on every pod sync, about once a minute) and reissues a projected token once
80% of its lifetime has passed, as kubelet's token manager does; a subPath mount of such a
volume is a bind mount of one resolved file, so it keeps the old contents, as on a real node.

Errors carry kubelet's wording (``configmap "x" not found``) and the volume's name, for the
kubelet to report as ``MountVolume.SetUp failed for volume "v" : <message>``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import os
import posixpath
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio

from sandbox.apiserver.goformat import go_quote
from sandbox.node.env import (
    NODE_ALLOCATABLE,
    EnvError,
    container_env,
    decode_secret_data,
    expand,
    pod_field_value,
    resource_value,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from sandbox.apiserver.server import APIServer

PODS: Final = ("", "pods")
CONFIGMAPS: Final = ("", "configmaps")
SECRETS: Final = ("", "secrets")
SERVICE_ACCOUNTS: Final = ("", "serviceaccounts")

DATA_DIR: Final = "..data"
_DATA_DIR_TMP: Final = "..data_tmp"
#: Where each kind of volume lives under ``<pod directory>/volumes``, named as kubelet's
#: plugins name their directories.
_PLUGIN_DIRS: Final[Mapping[str, str]] = {
    "emptyDir": "kubernetes.io~empty-dir",
    "configMap": "kubernetes.io~configmap",
    "secret": "kubernetes.io~secret",
    "downwardAPI": "kubernetes.io~downward-api",
    "projected": "kubernetes.io~projected",
}
#: Volumes written from API objects: refreshed, and always read-only in a container (kubelet
#: has mounted them read-only since 1.10, whatever the volumeMount says).
_API_DATA: Final = frozenset({"configMap", "secret", "downwardAPI", "projected"})
_DEFAULT_MODE: Final = 0o644
_EMPTY_DIR_MODE: Final = 0o777
#: kubelet's token manager asks for a new token once 80% of the old one's lifetime has
#: passed, and at least every 24 hours.
_TOKEN_REFRESH_FRACTION: Final = 0.8
_TOKEN_MAX_AGE: Final = dt.timedelta(hours=24)
_MAX_PATH: Final = 4096
_MAX_FILE_NAME: Final = 255
_HOST_PATH_CHECKS: Final[Mapping[str, tuple[Callable[[int], bool], str]]] = {
    "Directory": (stat.S_ISDIR, "is not a directory"),
    "DirectoryOrCreate": (stat.S_ISDIR, "is not a directory"),
    "File": (lambda mode: not stat.S_ISDIR(mode), "is not a file"),
    "FileOrCreate": (lambda mode: not stat.S_ISDIR(mode), "is not a file"),
    "Socket": (stat.S_ISSOCK, "is not a socket file"),
    "CharDevice": (stat.S_ISCHR, "is not a character device"),
    "BlockDevice": (stat.S_ISBLK, "is not a block device"),
}


@dataclass(frozen=True, slots=True)
class Mount:
    """One bind mount of a container.

    Attributes:
        source: A file or directory on the host (under the pod's directory, or a hostPath).
        destination: The absolute path inside the container.
        read_only: Whether to bind it read-only.
    """

    source: Path
    destination: str
    read_only: bool


class VolumeError(Exception):
    """A volume cannot be set up or mounted; the message is kubelet's.

    Attributes:
        message: What kubelet reports, e.g. ``configmap "x" not found``.
        volume: The volume's name, when the error is about one.
    """

    def __init__(self, message: str, *, volume: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.volume = volume


@dataclass(frozen=True, slots=True)
class File:
    """One file of a volume: its bytes and permission bits."""

    data: bytes
    mode: int


@dataclass(frozen=True, slots=True)
class _Token:
    token: str
    refresh_at: dt.datetime
    expires: dt.datetime


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Volumes:
    """The volumes of one pod on this node.

    Args:
        pod: The pod as stored (later versions are read from the store by uid).
        directory: The pod's own directory; volumes go under ``directory/volumes``.
        api: The API server: its store for objects, its authenticator for tokens.
        allocatable: The node's allocatable resources, for the downward API.
        clock: Now, for token rotation (tests move it).
    """

    def __init__(
        self,
        pod: Mapping[str, Any],
        directory: Path,
        api: APIServer,
        *,
        allocatable: Mapping[str, str] = NODE_ALLOCATABLE,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        self._pod = pod
        self._directory = directory
        self._api = api
        self._allocatable = allocatable
        self._clock = clock
        self._tokens: dict[tuple[str, int], _Token] = {}
        self._lock = anyio.Lock()

    @property
    def pod(self) -> Mapping[str, Any]:
        """The pod as stored now (labels and annotations change; the spec does not)."""
        metadata = self._pod.get("metadata") or {}
        stored = self._api.store.get(PODS, metadata.get("namespace", ""), metadata.get("name", ""))
        if stored is not None and stored["metadata"].get("uid") == metadata.get("uid"):
            self._pod = stored
        return self._pod

    def path(self, name: str) -> Path:
        """Where the pod-owned volume ``name`` lives on the host (hostPath volumes: the host's
        path)."""
        volume = self._volume(name)
        kind = _kind(volume)
        if kind == "hostPath":
            return Path((volume.get("hostPath") or {}).get("path") or "")
        plugin = _PLUGIN_DIRS.get(kind)
        if plugin is None:
            raise VolumeError(f"{kind} volumes are not supported by the sandbox", volume=name)
        return self._directory / "volumes" / plugin / name

    @property
    def next_token_refresh(self) -> dt.datetime | None:
        """When :meth:`refresh` next has a token to rotate, if the pod has any."""
        return min((held.refresh_at for held in self._tokens.values()), default=None)

    async def prepare(self) -> None:
        """Make every volume of the pod, as the kubelet does before starting containers.

        Safe to call again after a failure: what is already there is kept.

        Raises:
            VolumeError: The first volume that could not be made (after trying them all).
        """
        async with self._lock:
            await self._set_up(refresh=False)

    async def refresh(self) -> None:
        """Rewrite the configMap, secret, downwardAPI and projected volumes from the objects
        as they are now, and rotate tokens that are due. A volume whose source is gone keeps
        its files.

        Raises:
            VolumeError: The first volume that could not be brought up to date.
        """
        async with self._lock:
            await self._set_up(refresh=True)

    async def _set_up(self, *, refresh: bool) -> None:
        pod = self.pod
        first: VolumeError | None = None
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            name = volume.get("name", "")
            kind = _kind(volume)
            if refresh and kind not in _API_DATA:
                continue
            try:
                if kind == "emptyDir":
                    await anyio.to_thread.run_sync(_make_empty_dir, self.path(name))
                elif kind == "hostPath":
                    _check_host_path(volume.get("hostPath") or {})
                elif kind in _API_DATA:
                    payload = self._payload(pod, name, kind, volume.get(kind) or {})
                    await anyio.to_thread.run_sync(write_atomically, self.path(name), payload)
                else:
                    raise VolumeError(f"{kind} volumes are not supported by the sandbox")
            except VolumeError as error:
                first = first or VolumeError(error.message, volume=name)
            except OSError as error:
                first = first or VolumeError(f"{error.strerror}: {error.filename}", volume=name)
        if first is not None:
            raise first

    # -- payloads ------------------------------------------------------------------------------

    def _payload(
        self, pod: Mapping[str, Any], name: str, kind: str, source: Mapping[str, Any]
    ) -> dict[str, File]:
        default_mode = _mode(source.get("defaultMode"), _DEFAULT_MODE)
        namespace = pod["metadata"].get("namespace", "")
        optional = bool(source.get("optional"))
        if kind == "configMap":
            config_map = self._config_map(namespace, source.get("name", ""), optional=optional)
            return config_map_payload(config_map, source.get("items"), default_mode, optional)
        if kind == "secret":
            secret = self._secret(namespace, source.get("secretName", ""), optional=optional)
            return secret_payload(secret, source.get("items"), default_mode, optional)
        if kind == "downwardAPI":
            return downward_api_payload(
                pod, source.get("items") or [], default_mode, self._allocatable
            )
        return self._projected_payload(pod, name, source, default_mode)

    def _projected_payload(
        self, pod: Mapping[str, Any], name: str, source: Mapping[str, Any], default_mode: int
    ) -> dict[str, File]:
        """Every source into one directory, later ones winning a path; errors of all of them
        together, as kubelet's projected plugin aggregates them."""
        namespace = pod["metadata"].get("namespace", "")
        payload: dict[str, File] = {}
        errors: list[str] = []
        for index, projection in enumerate(source.get("sources") or []):
            try:
                if (ref := projection.get("configMap")) is not None:
                    optional = bool(ref.get("optional"))
                    config_map = self._config_map(namespace, ref.get("name", ""), optional=optional)
                    payload.update(
                        config_map_payload(config_map, ref.get("items"), default_mode, optional)
                    )
                elif (ref := projection.get("secret")) is not None:
                    optional = bool(ref.get("optional"))
                    secret = self._secret(namespace, ref.get("name", ""), optional=optional)
                    payload.update(secret_payload(secret, ref.get("items"), default_mode, optional))
                elif (ref := projection.get("downwardAPI")) is not None:
                    payload.update(
                        downward_api_payload(
                            pod, ref.get("items") or [], default_mode, self._allocatable
                        )
                    )
                elif (ref := projection.get("serviceAccountToken")) is not None:
                    token = self._token(pod, name, index, ref)
                    payload[ref.get("path") or "token"] = File(token.encode(), default_mode)
                else:
                    kinds = [key for key, value in projection.items() if value is not None]
                    kind = kinds[0] if kinds else "empty"
                    raise VolumeError(f"{kind} projections are not supported by the sandbox")
            except VolumeError as error:
                errors.append(error.message)
        if errors:
            raise VolumeError(_aggregate(errors))
        return payload

    def _config_map(self, namespace: str, name: str, *, optional: bool) -> Mapping[str, Any]:
        """The ConfigMap, an empty one when it is missing but ``optional``."""
        obj = self._api.store.get(CONFIGMAPS, namespace, name)
        if obj is None:
            if not optional:
                raise VolumeError(f"configmap {go_quote(name)} not found")
            return {}
        return obj

    def _secret(self, namespace: str, name: str, *, optional: bool) -> Mapping[str, Any]:
        obj = self._api.store.get(SECRETS, namespace, name)
        if obj is None:
            if not optional:
                raise VolumeError(f"secret {go_quote(name)} not found")
            return {}
        return obj

    def _token(
        self, pod: Mapping[str, Any], volume: str, index: int, projection: Mapping[str, Any]
    ) -> str:
        """The projection's token: the one held until it is due for rotation, then a new one
        from a TokenRequest bound to the pod (kubelet's token manager). A failed request
        keeps a held token that has not expired."""
        now = self._clock()
        held = self._tokens.get((volume, index))
        if held is not None and now < held.refresh_at:
            return held.token
        metadata = pod["metadata"]
        namespace = metadata.get("namespace", "")
        account = (pod.get("spec") or {}).get("serviceAccountName") or "default"
        service_account = self._api.store.get(SERVICE_ACCOUNTS, namespace, account)
        if service_account is None:
            if held is not None and now < held.expires:
                return held.token
            raise VolumeError(
                f"failed to fetch token: serviceaccounts {go_quote(account)} not found"
            )
        seconds = int(projection.get("expirationSeconds") or 3600)
        audience = projection.get("audience") or ""
        token, _ = self._api.authenticator.issue_service_account_token(
            namespace,
            account,
            service_account["metadata"].get("uid", ""),
            audiences=(audience,) if audience else (),
            expiration_seconds=seconds,
            bound_pod={"name": metadata.get("name", ""), "uid": metadata.get("uid", "")},
        )
        lifetime = dt.timedelta(seconds=seconds)
        self._tokens[(volume, index)] = _Token(
            token,
            refresh_at=now + min(lifetime * _TOKEN_REFRESH_FRACTION, _TOKEN_MAX_AGE),
            expires=now + lifetime,
        )
        return token

    # -- mounts --------------------------------------------------------------------------------

    def mounts(
        self, container: Mapping[str, Any], *, env: Mapping[str, str] | None = None
    ) -> list[Mount]:
        """The container's ``volumeMounts`` as bind mounts (kubelet's ``makeMounts``).

        A ``subPath`` is resolved to the file or directory it names (made, when missing, in a
        volume the pod owns); ``subPathExpr`` is expanded with the container's environment.

        Args:
            container: One of the pod's containers.
            env: The container's environment, if already built (otherwise it is built here
                when a ``subPathExpr`` needs it).

        Raises:
            VolumeError: An unknown volume, or a subPath that cannot be used.
        """
        container_name = container.get("name", "")
        mounts = []
        for mount in container.get("volumeMounts") or []:
            name = mount.get("name", "")
            volume = self._find(name)
            if volume is None:
                raise VolumeError(
                    f"cannot find volume {go_quote(name)} to mount into container "
                    f"{go_quote(container_name)}",
                    volume=name,
                )
            kind = _kind(volume)
            source = self.path(name)
            sub_path = mount.get("subPath") or ""
            if mount.get("subPathExpr"):
                sub_path = self._expand_sub_path(container, mount["subPathExpr"], env)
            if sub_path:
                describe = f"volumeMount {go_quote(name)} of container {go_quote(container_name)}"
                source = _resolve_sub_path(
                    source, sub_path, may_create=kind != "hostPath", describe=describe
                )
            destination = mount.get("mountPath") or ""
            if not destination.startswith("/"):
                destination = "/" + destination
            read_only = bool(mount.get("readOnly")) or kind in _API_DATA
            mounts.append(Mount(source, destination, read_only))
        return mounts

    def _expand_sub_path(
        self, container: Mapping[str, Any], expression: str, env: Mapping[str, str] | None
    ) -> str:
        """``ExpandContainerVolumeMounts``: every reference must have a non-empty value."""
        if env is None:
            pod = self.pod
            status = pod.get("status") or {}
            try:
                env = container_env(
                    pod,
                    container,
                    store=self._api.store,
                    pod_ip=status.get("podIP", ""),
                    host_ip=status.get("hostIP", ""),
                    node_name=(pod.get("spec") or {}).get("nodeName", ""),
                    allocatable=self._allocatable,
                )
            except EnvError as error:
                raise VolumeError(str(error)) from None
        missing: set[str] = set()

        def value(name: str) -> str:
            found = env.get(name, "")
            if not found:
                missing.add(name)
            return found

        expanded = expand(expression, value)
        if missing:
            raise VolumeError(f"missing value for {', '.join(sorted(missing))}")
        return expanded

    def _find(self, name: str) -> Mapping[str, Any] | None:
        for volume in (self._pod.get("spec") or {}).get("volumes") or []:
            if volume.get("name") == name:
                return dict(volume)
        return None

    def _volume(self, name: str) -> Mapping[str, Any]:
        volume = self._find(name)
        if volume is None:
            raise VolumeError(f"the pod has no volume {go_quote(name)}", volume=name)
        return volume


def _kind(volume: Mapping[str, Any]) -> str:
    """The volume's source; one without any is an emptyDir, as the API server defaults it."""
    return next(
        (key for key, value in volume.items() if key != "name" and value is not None), "emptyDir"
    )


def _mode(value: Any, default: int) -> int:
    return int(value) & 0o7777 if value is not None else default


def _aggregate(messages: list[str]) -> str:
    """``utilerrors.NewAggregate``'s text: one error as it is, several in brackets."""
    unique = list(dict.fromkeys(messages))
    return unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]"


# -- what each source holds --------------------------------------------------------------------


def config_map_payload(
    config_map: Mapping[str, Any],
    items: Iterable[Mapping[str, Any]] | None,
    default_mode: int,
    optional: bool,
) -> dict[str, File]:
    """A ConfigMap's files (the configmap plugin's ``MakePayload``): every key of ``data``
    and ``binaryData``, or only ``items``, each at its ``path`` with its ``mode``."""
    data = {key: str(value).encode() for key, value in (config_map.get("data") or {}).items()}
    for key, value in (config_map.get("binaryData") or {}).items():
        try:
            data[key] = base64.b64decode(value or "", validate=True)
        except (binascii.Error, ValueError):
            continue
    return _key_payload(
        data, items, default_mode, optional, "configmap references non-existent config key"
    )


def secret_payload(
    secret: Mapping[str, Any],
    items: Iterable[Mapping[str, Any]] | None,
    default_mode: int,
    optional: bool,
) -> dict[str, File]:
    """A Secret's files (the secret plugin's ``MakePayload``), its data decoded."""
    return _key_payload(
        decode_secret_data(secret),
        items,
        default_mode,
        optional,
        "secret references non-existent secret key",
    )


def _key_payload(
    data: Mapping[str, bytes],
    items: Iterable[Mapping[str, Any]] | None,
    default_mode: int,
    optional: bool,
    missing: str,
) -> dict[str, File]:
    items = list(items or [])
    if not items:
        return {key: File(value, default_mode) for key, value in data.items()}
    payload: dict[str, File] = {}
    for item in items:
        key = item.get("key", "")
        if key not in data:
            if optional:
                continue
            raise VolumeError(f"{missing}: {key}")
        payload[item.get("path") or key] = File(data[key], _mode(item.get("mode"), default_mode))
    return payload


def downward_api_payload(
    pod: Mapping[str, Any],
    items: Iterable[Mapping[str, Any]],
    default_mode: int,
    allocatable: Mapping[str, str] = NODE_ALLOCATABLE,
) -> dict[str, File]:
    """The downward API's files (``downwardapi.CollectData``): metadata fields, labels and
    annotations as ``key="value"`` lines, and resources of a named container."""
    payload: dict[str, File] = {}
    errors: list[str] = []
    for item in items:
        data = b""
        try:
            if (field := item.get("fieldRef")) is not None:
                field_path = field.get("fieldPath", "")
                # A volume is written once, before the pod has addresses: only metadata.
                if not field_path.startswith("metadata."):
                    raise EnvError(f"unsupported fieldPath: {field_path}")
                value = pod_field_value(
                    pod, field_path, api_version=field.get("apiVersion") or "v1"
                )
                data = value.encode()
            elif (selector := item.get("resourceFieldRef")) is not None:
                data = resource_value(pod, None, selector, allocatable).encode()
        except EnvError as error:
            errors.append(str(error))
        payload[posixpath.normpath(item.get("path", ""))] = File(
            data, _mode(item.get("mode"), default_mode)
        )
    if errors:
        raise VolumeError(_aggregate(errors))
    return payload


# -- the atomic writer -------------------------------------------------------------------------


def write_atomically(target: Path, payload: Mapping[str, File]) -> bool:
    """Make ``target`` hold exactly ``payload``, switching from the old contents to the new
    in one ``rename(2)`` (see the module docstring).

    Args:
        target: The volume's directory (made if missing).
        payload: Relative path -> file.

    Returns:
        Whether anything was written (False: the contents were already these).

    Raises:
        VolumeError: A path in the payload is not a plain relative path.
        OSError: The filesystem refused.
    """
    files = _clean_payload(payload)
    target.mkdir(parents=True, exist_ok=True)
    data_link = target / DATA_DIR
    try:
        old_name: str | None = os.readlink(data_link)
    except OSError:
        old_name = None
    old_dir = target / old_name if old_name else None
    old_paths = _tree(old_dir) if old_dir is not None else set()
    stale = old_paths - _with_parents(files)
    write = old_dir is None or bool(stale) or not _holds(old_dir, files)
    if write:
        stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime())
        new_dir = Path(tempfile.mkdtemp(prefix=stamp, dir=target))
        # 0755 so that any user in the container can walk to the files (mkdtemp makes 0700).
        new_dir.chmod(0o755)
        for path, file in files.items():
            full = new_dir / path
            full.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_EXCL, file.mode)
            try:
                os.write(descriptor, file.data)
                os.fchmod(descriptor, file.mode)  # the mode asked, whatever the umask
            finally:
                os.close(descriptor)
        temporary = target / _DATA_DIR_TMP
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(new_dir.name)
        temporary.replace(data_link)
    # The names a program sees: one symlink per top-level name, into ..data (made even when
    # nothing was written, should one have gone missing).
    for top in sorted({path.split("/", 1)[0] for path in files}):
        visible = target / top
        if not os.path.lexists(visible):
            visible.symlink_to(f"{DATA_DIR}/{top}")
    for path in sorted(stale):
        if "/" not in path:
            (target / path).unlink(missing_ok=True)
    if write and old_dir is not None:
        shutil.rmtree(old_dir, ignore_errors=True)
    return write


def _clean_payload(payload: Mapping[str, File]) -> dict[str, File]:
    """The payload with clean paths, each checked as the AtomicWriter's ``validatePath``."""
    files: dict[str, File] = {}
    for raw, file in payload.items():
        if not raw:
            raise VolumeError(f'invalid path: must not be empty: "{raw}"')
        if raw.startswith("/"):
            raise VolumeError(f"invalid path: must be relative path: {raw}")
        if len(raw) > _MAX_PATH:
            raise VolumeError(f"invalid path: must be less than or equal to {_MAX_PATH} characters")
        parts = raw.split("/")
        if ".." in parts:
            raise VolumeError(f"invalid path: must not contain '..': {raw}")
        if any(len(part) > _MAX_FILE_NAME for part in parts):
            raise VolumeError(
                f"invalid path: filenames must be less than or equal to {_MAX_FILE_NAME} characters"
            )
        if parts[0].startswith("..") and len(parts[0]) > 2:
            raise VolumeError(f"invalid path: must not start with '..': {raw}")
        files[posixpath.normpath(raw)] = file
    return files


def _tree(directory: Path) -> set[str]:
    """Every file and directory under ``directory``, relative to it."""
    found: set[str] = set()
    for root, directories, names in os.walk(directory):
        relative = os.path.relpath(root, directory)
        for name in (*directories, *names):
            found.add(name if relative == "." else f"{relative}/{name}")
    return found


def _with_parents(paths: Iterable[str]) -> set[str]:
    result: set[str] = set()
    for path in paths:
        parts = path.split("/")
        result.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return result


def _holds(directory: Path, files: Mapping[str, File]) -> bool:
    """Whether ``directory`` already has these files, contents and modes."""
    for path, file in files.items():
        try:
            info = os.lstat(directory / path)
            if not stat.S_ISREG(info.st_mode) or stat.S_IMODE(info.st_mode) != file.mode:
                return False
            if (directory / path).read_bytes() != file.data:
                return False
        except OSError:
            return False
    return True


# -- local volumes -----------------------------------------------------------------------------


def _make_empty_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    # emptyDir's directory is world-writable, whatever user the container runs as.
    path.chmod(_EMPTY_DIR_MODE)


def _check_host_path(source: Mapping[str, Any]) -> Path:
    """The hostPath's path, checked as kubelet's hostPath type checker does; one that does
    not exist is an error whatever its type, as the sandbox does not create host paths."""
    path = str(source.get("path") or "")
    kind = str(source.get("type") or "")
    if not os.path.isabs(path):
        raise VolumeError(f"hostPath {go_quote(path)} is not an absolute path")
    if kind and kind not in _HOST_PATH_CHECKS:
        raise VolumeError(f"{kind} is an invalid volume type")
    check, failure = _HOST_PATH_CHECKS.get(kind, (None, ""))
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if kind in ("", "DirectoryOrCreate", "FileOrCreate"):
            raise VolumeError(
                f"hostPath {path} does not exist, and the sandbox does not create paths on the host"
            ) from None
        raise VolumeError(f"hostPath type check failed: {path} {failure}") from None
    if check is not None and not check(mode):
        raise VolumeError(f"hostPath type check failed: {path} {failure}")
    return Path(path)


def _resolve_sub_path(base: Path, sub_path: str, *, may_create: bool, describe: str) -> Path:
    """The host path a ``subPath`` names, made (as a directory) when missing and the volume
    is the pod's own, and refused when it leads out of the volume through a symlink
    (kubelet's ``SafeMakeDir`` and ``PrepareSafeSubpath``)."""
    if sub_path.startswith("/"):
        raise VolumeError(f"error SubPath `{sub_path}` must not be an absolute path")
    if ".." in sub_path.split("/"):
        raise VolumeError(f"unable to provision SubPath `{sub_path}`: must not contain '..'")
    host = base / sub_path
    root = os.path.realpath(base)

    def inside(path: str) -> bool:
        return path == root or path.startswith(root + os.sep)

    if not os.path.lexists(host):
        existing = host
        while not os.path.lexists(existing) and existing != base:
            existing = existing.parent
        if not may_create or not inside(os.path.realpath(existing)):
            raise VolumeError(f"failed to create subPath directory for {describe}")
        mode = stat.S_IMODE(os.stat(base).st_mode)
        os.makedirs(host, mode=mode, exist_ok=True)
        host.chmod(mode)
    resolved = os.path.realpath(host)
    if not inside(resolved) or not os.path.exists(resolved):
        raise VolumeError(f"failed to prepare subPath for {describe}")
    return Path(resolved)
