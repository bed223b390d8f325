"""Pod volumes on a node, as a program in the container would find them.

Each test runs the API server in-process, creates the pod and the objects it uses through
the server's own write path (so admission and defaulting apply, and the pod gets its
``kube-api-access`` volume), then makes the volumes in a temporary pod directory and reads
the files back: contents, modes, the ``..data`` layout of kubelet's atomic writer, what a
refresh changes, and that projected tokens are ones the API server accepts.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import stat
from typing import TYPE_CHECKING, Any

import pytest

from sandbox.apiserver.rbac import UserInfo
from sandbox.node.volumes import DATA_DIR, Mount, VolumeError, Volumes

if TYPE_CHECKING:
    from pathlib import Path

    from sandbox.apiserver.run import Running
    from sandbox.apiserver.server import APIServer

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

Obj = dict[str, Any]
ADMIN = UserInfo("kubernetes-admin", groups=("system:masters", "system:authenticated"))
TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"


@pytest.fixture
def api(apiserver: Running) -> APIServer:
    return apiserver.server


async def create(api: APIServer, plural: str, obj: Obj, namespace: str = "default") -> Obj:
    resource = api.registry.lookup("", "v1", plural)
    assert resource is not None
    return await api.objects.create(resource, namespace, obj, ADMIN)


async def merge_patch(api: APIServer, plural: str, name: str, patch: Obj) -> Obj:
    resource = api.registry.lookup("", "v1", plural)
    assert resource is not None
    _, result = await api.objects.patch(resource, "default", name, "merge", patch, ADMIN)
    return result


async def create_pod(api: APIServer, *volumes: Obj, **spec: Any) -> Obj:
    container: Obj = {
        "name": "app",
        "image": "app",
        "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}},
        "volumeMounts": [
            {"name": v["name"], "mountPath": f"/mnt/{v['name']}"}
            for v in volumes
            if "persistentVolumeClaim" not in v
        ],
    }
    return await create(
        api,
        "pods",
        {
            "metadata": {"name": "web", "labels": {"app": "web"}, "annotations": {"a": "1"}},
            "spec": {"containers": [container], "volumes": list(volumes), **spec},
        },
    )


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def listing(directory: Path) -> set[str]:
    """The names a program sees, the timestamped data directory shown as ``..<stamp>``."""
    names = set()
    for name in os.listdir(directory):
        is_stamp = name.startswith("..") and name not in (DATA_DIR, "..data_tmp")
        names.add("..<stamp>" if is_stamp else name)
    return names


def data_target(directory: Path) -> str:
    return os.readlink(directory / DATA_DIR)


# -- configMap and secret ----------------------------------------------------------------------


async def test_a_config_map_volume_holds_every_key_through_data(
    api: APIServer, tmp_path: Path
) -> None:
    await create(
        api,
        "configmaps",
        {
            "metadata": {"name": "settings"},
            "data": {"app.conf": "level=3\n", "mode": "fast"},
            "binaryData": {"logo.bin": b64(b"\x89PNG\x00")},
        },
    )
    pod = await create_pod(api, {"name": "cfg", "configMap": {"name": "settings"}})
    volumes = Volumes(pod, tmp_path, api)
    await volumes.prepare()
    directory = volumes.path("cfg")
    assert directory.is_relative_to(tmp_path)
    assert listing(directory) == {"..<stamp>", DATA_DIR, "app.conf", "mode", "logo.bin"}
    assert data_target(directory).startswith("..20")
    assert os.readlink(directory / "app.conf") == "..data/app.conf"
    assert (directory / "app.conf").read_text() == "level=3\n"
    assert (directory / "logo.bin").read_bytes() == b"\x89PNG\x00"
    assert mode(directory / "mode") == 0o644
    assert mode(directory / DATA_DIR) == 0o755


async def test_items_paths_and_modes(api: APIServer, tmp_path: Path) -> None:
    await create(
        api, "configmaps", {"metadata": {"name": "settings"}, "data": {"a": "1", "b": "2"}}
    )
    await create(
        api, "secrets", {"metadata": {"name": "tls"}, "stringData": {"key": "k", "crt": "c"}}
    )
    pod = await create_pod(
        api,
        {
            "name": "cfg",
            "configMap": {
                "name": "settings",
                "defaultMode": 0o440,
                "items": [
                    {"key": "a", "path": "conf.d/a.conf", "mode": 0o600},
                    {"key": "b", "path": "b"},
                ],
            },
        },
        {"name": "tls", "secret": {"secretName": "tls", "defaultMode": 0o400}},
    )
    volumes = Volumes(pod, tmp_path, api)
    await volumes.prepare()
    cfg = volumes.path("cfg")
    assert listing(cfg) == {"..<stamp>", DATA_DIR, "conf.d", "b"}
    assert os.readlink(cfg / "conf.d") == "..data/conf.d"
    assert (cfg / "conf.d" / "a.conf").read_text() == "1"
    assert mode(cfg / "conf.d" / "a.conf") == 0o600
    assert mode(cfg / "b") == 0o440
    tls = volumes.path("tls")
    assert {n for n in listing(tls) if not n.startswith("..")} == {"key", "crt"}
    assert (tls / "key").read_text() == "k"
    assert mode(tls / "crt") == 0o400


async def test_missing_sources_fail_unless_optional(api: APIServer, tmp_path: Path) -> None:
    await create(api, "configmaps", {"metadata": {"name": "settings"}, "data": {"a": "1"}})
    pod = await create_pod(
        api,
        {"name": "maybe", "configMap": {"name": "absent", "optional": True}},
        {
            "name": "some",
            "configMap": {
                "name": "settings",
                "optional": True,
                "items": [{"key": "x", "path": "x"}],
            },
        },
        {"name": "scratch", "emptyDir": {}},
        {"name": "cfg", "configMap": {"name": "absent"}},
    )
    volumes = Volumes(pod, tmp_path, api)
    with pytest.raises(VolumeError) as raised:
        await volumes.prepare()
    assert raised.value.message == 'configmap "absent" not found'
    assert raised.value.volume == "cfg"
    # The other volumes were made all the same: optional ones empty.
    assert listing(volumes.path("maybe")) == {"..<stamp>", DATA_DIR}
    assert listing(volumes.path("some")) == {"..<stamp>", DATA_DIR}
    assert volumes.path("scratch").is_dir()


@pytest.mark.parametrize(
    ("volume", "message"),
    [
        ({"secret": {"secretName": "absent"}}, 'secret "absent" not found'),
        (
            {"configMap": {"name": "settings", "items": [{"key": "nope", "path": "n"}]}},
            "configmap references non-existent config key: nope",
        ),
        (
            {"secret": {"secretName": "db", "items": [{"key": "nope", "path": "n"}]}},
            "secret references non-existent secret key: nope",
        ),
        (
            {"persistentVolumeClaim": {"claimName": "data"}},
            "persistentVolumeClaim volumes are not supported by the sandbox",
        ),
    ],
)
async def test_volume_errors(api: APIServer, tmp_path: Path, volume: Obj, message: str) -> None:
    await create(api, "configmaps", {"metadata": {"name": "settings"}, "data": {"a": "1"}})
    await create(api, "secrets", {"metadata": {"name": "db"}, "stringData": {"pw": "x"}})
    pod = await create_pod(api, {"name": "v", **volume})
    with pytest.raises(VolumeError) as raised:
        await Volumes(pod, tmp_path, api).prepare()
    assert (raised.value.message, raised.value.volume) == (message, "v")


async def test_refresh_swaps_the_data_directory_in_one_step(api: APIServer, tmp_path: Path) -> None:
    await create(
        api, "configmaps", {"metadata": {"name": "settings"}, "data": {"a": "1", "b": "2"}}
    )
    pod = await create_pod(api, {"name": "cfg", "configMap": {"name": "settings"}})
    volumes = Volumes(pod, tmp_path, api)
    await volumes.prepare()
    directory = volumes.path("cfg")
    before = data_target(directory)

    await volumes.refresh()
    assert data_target(directory) == before  # nothing changed: nothing written

    await merge_patch(api, "configmaps", "settings", {"data": {"a": "10", "b": None, "c": "3"}})
    # A reader that resolved ..data before the swap still reads the whole old version.
    old_view = directory / before
    await volumes.refresh()
    after = data_target(directory)
    assert after != before
    assert not old_view.exists()
    assert listing(directory) == {"..<stamp>", DATA_DIR, "a", "c"}
    assert (directory / "a").read_text() == "10"
    assert (directory / "c").read_text() == "3"

    # A source that disappears leaves the last contents in place.
    resource = api.registry.lookup("", "v1", "configmaps")
    assert resource is not None
    await api.objects.delete(resource, "default", "settings", ADMIN, {})
    with pytest.raises(VolumeError, match='configmap "settings" not found'):
        await volumes.refresh()
    assert data_target(directory) == after
    assert (directory / "a").read_text() == "10"


# -- downward API --------------------------------------------------------------------------------


async def test_downward_api_files_follow_the_pod(api: APIServer, tmp_path: Path) -> None:
    def item(path: str, field_path: str) -> Obj:
        return {"path": path, "fieldRef": {"fieldPath": field_path}}

    pod = await create_pod(
        api,
        {
            "name": "info",
            "downwardAPI": {
                "items": [
                    item("name", "metadata.name"),
                    item("namespace", "metadata.namespace"),
                    item("uid", "metadata.uid"),
                    item("labels", "metadata.labels"),
                    item("app", "metadata.labels['app']"),
                    {**item("annotations", "metadata.annotations"), "mode": 0o600},
                    {
                        "path": "memory_mi",
                        "resourceFieldRef": {
                            "containerName": "app",
                            "resource": "limits.memory",
                            "divisor": "1Mi",
                        },
                    },
                    {
                        "path": "cpu_milli",
                        "resourceFieldRef": {
                            "containerName": "app",
                            "resource": "limits.cpu",
                            "divisor": "1m",
                        },
                    },
                ]
            },
        },
    )
    volumes = Volumes(pod, tmp_path, api)
    await volumes.prepare()
    info = volumes.path("info")

    def read(name: str) -> str:
        return (info / name).read_text()

    assert read("name") == "web"
    assert read("namespace") == "default"
    assert read("uid") == pod["metadata"]["uid"]
    assert read("labels") == 'app="web"'
    assert read("app") == "web"
    assert read("annotations") == 'a="1"'
    assert mode(info / "annotations") == 0o600
    assert read("memory_mi") == "64"
    assert read("cpu_milli") == "500"

    await merge_patch(api, "pods", "web", {"metadata": {"labels": {"tier": "front"}}})
    await volumes.refresh()
    assert read("labels") == 'app="web"\ntier="front"'


# -- projected volumes and tokens --------------------------------------------------------------


async def test_a_projected_volume_merges_its_sources(api: APIServer, tmp_path: Path) -> None:
    await create(api, "configmaps", {"metadata": {"name": "settings"}, "data": {"a": "1"}})
    await create(api, "secrets", {"metadata": {"name": "db"}, "stringData": {"pw": "s3"}})
    pod = await create_pod(
        api,
        {
            "name": "all",
            "projected": {
                "defaultMode": 0o640,
                "sources": [
                    {"configMap": {"name": "settings"}},
                    {"secret": {"name": "db", "items": [{"key": "pw", "path": "db/password"}]}},
                    {"secret": {"name": "absent", "optional": True}},
                    {
                        "downwardAPI": {
                            "items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]
                        }
                    },
                    {
                        "serviceAccountToken": {
                            "audience": "vault",
                            "expirationSeconds": 3600,
                            "path": "vault-token",
                        }
                    },
                ],
            },
        },
    )
    volumes = Volumes(pod, tmp_path, api)
    await volumes.prepare()
    directory = volumes.path("all")
    assert listing(directory) == {"..<stamp>", DATA_DIR, "a", "db", "name", "vault-token"}
    assert (directory / "a").read_text() == "1"
    assert (directory / "db" / "password").read_text() == "s3"
    assert (directory / "name").read_text() == "web"
    assert mode(directory / "vault-token") == 0o640
    token = (directory / "vault-token").read_text()
    user = api.authenticator.user_for_token(token, ("vault",))
    assert user is not None
    assert user.name == "system:serviceaccount:default:default"
    assert user.extra["authentication.kubernetes.io/pod-name"] == ("web",)
    assert user.extra["authentication.kubernetes.io/pod-uid"] == (pod["metadata"]["uid"],)
    # Issued for the audience asked, not for the API server.
    assert api.authenticator.user_for_token(token) is None


async def test_tokens_rotate_after_80_percent_of_their_lifetime(
    api: APIServer, tmp_path: Path
) -> None:
    now = [dt.datetime.now(dt.UTC)]
    pod = await create_pod(
        api,
        {
            "name": "token",
            "projected": {
                "sources": [{"serviceAccountToken": {"expirationSeconds": 3600, "path": "t"}}]
            },
        },
    )
    volumes = Volumes(pod, tmp_path, api, clock=lambda: now[0])
    await volumes.prepare()
    path = volumes.path("token") / "t"
    first = path.read_text()
    assert volumes.next_token_refresh == now[0] + dt.timedelta(minutes=48)

    now[0] += dt.timedelta(minutes=47)
    await volumes.refresh()
    assert path.read_text() == first

    now[0] += dt.timedelta(minutes=2)
    await volumes.refresh()
    second = path.read_text()
    assert second != first
    user = api.authenticator.user_for_token(second)
    assert user is not None
    assert user.name == "system:serviceaccount:default:default"


async def test_the_admission_volume_gives_the_api_credentials(
    api: APIServer, tmp_path: Path
) -> None:
    pod = await create_pod(api)
    (volume,) = pod["spec"]["volumes"]
    assert volume["name"].startswith("kube-api-access-")
    volumes = Volumes(pod, tmp_path, api)
    await volumes.prepare()
    directory = volumes.path(volume["name"])
    assert listing(directory) == {"..<stamp>", DATA_DIR, "token", "ca.crt", "namespace"}
    assert (directory / "namespace").read_text() == "default"
    root_ca = api.store.get(("", "configmaps"), "default", "kube-root-ca.crt")
    assert root_ca is not None
    assert (directory / "ca.crt").read_text() == root_ca["data"]["ca.crt"]
    user = api.authenticator.user_for_token((directory / "token").read_text())
    assert user is not None
    assert user.name == "system:serviceaccount:default:default"
    assert volumes.mounts(pod["spec"]["containers"][0]) == [
        Mount(directory, TOKEN_PATH, read_only=True)
    ]


async def test_a_token_needs_its_service_account(api: APIServer, tmp_path: Path) -> None:
    await create(api, "serviceaccounts", {"metadata": {"name": "robot"}})
    pod = await create_pod(api, serviceAccountName="robot")
    resource = api.registry.lookup("", "v1", "serviceaccounts")
    assert resource is not None
    await api.objects.delete(resource, "default", "robot", ADMIN, {})
    with pytest.raises(
        VolumeError, match=r'^failed to fetch token: serviceaccounts "robot" not found$'
    ):
        await Volumes(pod, tmp_path, api).prepare()


# -- emptyDir and hostPath -----------------------------------------------------------------------


async def test_empty_dir_and_host_path(api: APIServer, tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    pod = await create_pod(
        api,
        {"name": "scratch", "emptyDir": {}},
        {"name": "memory", "emptyDir": {"medium": "Memory"}},
        {"name": "shared", "hostPath": {"path": str(host), "type": "Directory"}},
        automountServiceAccountToken=False,
    )
    volumes = Volumes(pod, tmp_path / "pod", api)
    await volumes.prepare()
    assert mode(volumes.path("scratch")) == 0o777
    assert volumes.path("memory").is_dir()
    assert volumes.mounts(pod["spec"]["containers"][0]) == [
        Mount(volumes.path("scratch"), "/mnt/scratch", read_only=False),
        Mount(volumes.path("memory"), "/mnt/memory", read_only=False),
        Mount(host, "/mnt/shared", read_only=False),
    ]


@pytest.mark.parametrize(
    ("kind", "make", "message"),
    [
        ("", None, "hostPath {} does not exist, and the sandbox does not create paths on the host"),
        (
            "DirectoryOrCreate",
            None,
            "hostPath {} does not exist, and the sandbox does not create paths on the host",
        ),
        (
            "FileOrCreate",
            None,
            "hostPath {} does not exist, and the sandbox does not create paths on the host",
        ),
        ("Directory", None, "hostPath type check failed: {} is not a directory"),
        ("File", "dir", "hostPath type check failed: {} is not a file"),
        ("Directory", "file", "hostPath type check failed: {} is not a directory"),
        ("Socket", "file", "hostPath type check failed: {} is not a socket file"),
    ],
)
async def test_host_paths_are_checked_never_created(
    api: APIServer, tmp_path: Path, kind: str, make: str | None, message: str
) -> None:
    host = tmp_path / "host"
    if make == "dir":
        host.mkdir()
    elif make == "file":
        host.write_text("x")
    pod = await create_pod(api, {"name": "h", "hostPath": {"path": str(host), "type": kind}})
    with pytest.raises(VolumeError) as raised:
        await Volumes(pod, tmp_path / "pod", api).prepare()
    assert raised.value.message == message.format(host)
    assert host.exists() == (make is not None)


# -- mounts --------------------------------------------------------------------------------------


async def test_sub_paths(api: APIServer, tmp_path: Path) -> None:
    await create(api, "configmaps", {"metadata": {"name": "settings"}, "data": {"app.conf": "x"}})
    container: Obj = {
        "name": "app",
        "image": "app",
        "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "volumeMounts": [
            {"name": "scratch", "mountPath": "/data", "subPath": "a/b"},
            {"name": "scratch", "mountPath": "/logs", "subPathExpr": "logs/$(POD)"},
            {"name": "cfg", "mountPath": "/etc/app.conf", "subPath": "app.conf"},
            {"name": "cfg", "mountPath": "/etc/app", "readOnly": False},
        ],
    }
    pod = await create(
        api,
        "pods",
        {
            "metadata": {"name": "web"},
            "spec": {
                "automountServiceAccountToken": False,
                "containers": [container],
                "volumes": [
                    {"name": "scratch", "emptyDir": {}},
                    {"name": "cfg", "configMap": {"name": "settings"}},
                ],
            },
        },
    )
    volumes = Volumes(pod, tmp_path, api)
    await volumes.prepare()
    scratch, cfg = volumes.path("scratch"), volumes.path("cfg")
    mounts = volumes.mounts(pod["spec"]["containers"][0])
    assert mounts == [
        Mount(scratch / "a" / "b", "/data", read_only=False),
        Mount(scratch / "logs" / "web", "/logs", read_only=False),
        # A subPath of a configMap is the file itself, in the data directory of the moment.
        Mount(cfg / data_target(cfg) / "app.conf", "/etc/app.conf", read_only=True),
        Mount(cfg, "/etc/app", read_only=True),
    ]
    assert mode(scratch / "a" / "b") == 0o777
    # A given environment is used as it is.
    given = volumes.mounts(pod["spec"]["containers"][0], env={"POD": "other"})
    assert given[1] == Mount(scratch / "logs" / "other", "/logs", read_only=False)


@pytest.mark.parametrize(
    ("mount", "env", "message"),
    [
        (
            {"name": "ghost", "mountPath": "/x"},
            {},
            'cannot find volume "ghost" to mount into container "app"',
        ),
        ({"name": "scratch", "mountPath": "/x", "subPathExpr": "$(UP)"}, {"UP": ".."}, None),
        (
            {"name": "scratch", "mountPath": "/x", "subPathExpr": "$(ROOT)etc"},
            {"ROOT": "/"},
            "error SubPath `/etc` must not be an absolute path",
        ),
        (
            {"name": "scratch", "mountPath": "/x", "subPathExpr": "$(A)/$(B)"},
            {"A": ""},
            "missing value for A, B",
        ),
        (
            {"name": "scratch", "mountPath": "/x", "subPath": "escape/etc"},
            {},
            'failed to prepare subPath for volumeMount "scratch" of container "app"',
        ),
        (
            {"name": "shared", "mountPath": "/x", "subPath": "new"},
            {},
            'failed to create subPath directory for volumeMount "shared" of container "app"',
        ),
    ],
)
async def test_mounts_that_cannot_be_made(
    api: APIServer, tmp_path: Path, mount: Obj, env: dict[str, str], message: str | None
) -> None:
    host = tmp_path / "host"
    host.mkdir()
    pod = await create(
        api,
        "pods",
        {
            "metadata": {"name": "web"},
            "spec": {
                "automountServiceAccountToken": False,
                "containers": [{"name": "app", "image": "app"}],
                "volumes": [
                    {"name": "scratch", "emptyDir": {}},
                    {"name": "shared", "hostPath": {"path": str(host)}},
                ],
            },
        },
    )
    volumes = Volumes(pod, tmp_path / "pod", api)
    await volumes.prepare()
    # A symlink a program in the pod could have left, leading out of the volume.
    (volumes.path("scratch") / "escape").symlink_to("/")
    with pytest.raises(VolumeError) as raised:
        volumes.mounts({"name": "app", "volumeMounts": [mount]}, env=env)
    assert raised.value.message == (
        message or "unable to provision SubPath `..`: must not contain '..'"
    )
    assert not (host / "new").exists()
