"""The sandbox's images: what a container of a given image runs, as a host program.

There is no registry and no container filesystem here: a container is a process on the host,
in its pod's network namespace and a private mount view (see ``sandbox.node.containers``).
An *image* is therefore only a name that this map turns into a command line and the
environment the image would bring (its ``ENV``), as a ``Dockerfile``'s ``ENTRYPOINT``/``CMD``
and ``ENV`` would.

Names are matched as Docker parses a reference, ``[REGISTRY/]PATH[:TAG][@DIGEST]``: the tag
and digest are ignored (every tag of an image is the same program), and so is the registry
(the first component, when it has a ``.`` or a ``:`` or is ``localhost``), and Docker Hub's
``library/``. The rest, the *repository path*, is looked up first as a whole and then by its
last component:

================================  ===============================================================
``sandbox/http-echo``             ``python -m sandbox.images.echo http --port 8080 --pod NAME
                                  --namespace NS ARGS...``: the container's ``command`` is
                                  ignored, its ``args`` are appended (so ``args: [--port, "9000"]``
                                  moves the port).
``sandbox/tcp-echo``              the same with ``tcp --port 7000``.
``sandbox/udp-echo``              the same with ``udp --port 7001``.
``sandbox/exec``                  the container's ``command`` + ``args``, a program found on the
                                  host's ``PATH`` (``redis-server``, ``postgres``, ``sh -c ...``).
``*/tel2`` (any registry, owner   Telepresence's own image, running this checkout: ``python -m
and tag, e.g. ``ghcr.io/          agent REST...`` when the container's ``args`` start with
telepresenceio/tel2:2.20.0``)     ``agent``, else ``python -m manager ARGS...``.
================================  ===============================================================

Any other image cannot be "pulled": the kubelet shows ``ErrImagePull`` and then
``ImagePullBackOff`` with :class:`UnknownImage`'s message, which lists the known names.

The environment a container starts with is the image's (:data:`BASE_ENV`: a ``PATH`` to the
host's programs, ``HOME``, ``LANG``; the Python images add ``PYTHONPATH`` to this checkout and
``PYTHONUNBUFFERED``) overlaid with the container's own (``env``, ``envFrom``, the service
links), as a container runtime merges them. Nothing else of the kubelet's environment leaks in.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: This checkout: the Python images run its packages (``sandbox``, ``manager``, ``agent``).
CHECKOUT = Path(__file__).resolve().parents[2]
#: What every image's ``ENV`` holds (a Debian image's defaults).
BASE_ENV: Mapping[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    # A C locale would make the launcher's Python coerce LC_CTYPE into the program's
    # environment (PEP 538); images built on Debian set a UTF-8 one anyway.
    "LANG": "C.UTF-8",
}
PYTHON_ENV: Mapping[str, str] = {
    **BASE_ENV,
    "PYTHONPATH": str(CHECKOUT),
    "PYTHONUNBUFFERED": "1",
}
ECHO_PORTS = {"http": 8080, "tcp": 7000, "udp": 7001}


class ImageError(Exception):
    """A container cannot be made from its image."""


class UnknownImage(ImageError):
    """No program is known for the image: what a failed pull is in the sandbox."""

    def __init__(self, image: str, known: list[str]) -> None:
        super().__init__(
            f'failed to pull image "{image}": image not known to the sandbox (known: '
            f"{', '.join(known)})"
        )
        self.image = image


class NoCommand(ImageError):
    """The image has no default command and the container gives none."""


@dataclass(frozen=True, slots=True)
class Container:
    """What of a pod's container an image needs to decide what runs."""

    image: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    pod: str = ""
    namespace: str = ""


@dataclass(frozen=True, slots=True)
class Program:
    """What a container runs: its command line and the image's environment."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    #: The image's own files: host paths the program needs, kept visible in the container
    #: even under a volume mounted over one of their parents (an emptyDir at ``/tmp`` over a
    #: checkout kept in ``/tmp``).
    files: tuple[Path, ...] = ()


#: What the Python images run from: this checkout, its virtual environment, the interpreter.
PYTHON_FILES = tuple(
    dict.fromkeys(Path(p).resolve() for p in (CHECKOUT, sys.prefix, sys.base_prefix))
)


#: An image: how it turns a container into a program.
Image = Callable[[Container], Program]


@dataclass(frozen=True, slots=True)
class Reference:
    """An image reference taken apart as Docker does."""

    registry: str
    path: str
    tag: str
    digest: str

    @property
    def name(self) -> str:
        """The repository path's last component (``tel2`` of ``telepresenceio/tel2``)."""
        return self.path.rsplit("/", 1)[-1]


def parse_reference(image: str) -> Reference:
    """``[REGISTRY/]PATH[:TAG][@DIGEST]``, with Docker Hub's defaults filled in."""
    rest, _, digest = image.partition("@")
    components = rest.split("/")
    first = components[0]
    if len(components) > 1 and ("." in first or ":" in first or first == "localhost"):
        registry, components = first, components[1:]
    else:
        registry = "docker.io"
    last, _, tag = components[-1].partition(":")
    components[-1] = last
    if registry == "docker.io" and len(components) == 2 and components[0] == "library":
        components = components[1:]
    return Reference(registry, "/".join(components), tag or ("" if digest else "latest"), digest)


def echo(protocol: str) -> Image:
    """One of the echo servers (``sandbox.images.echo``): ``args`` appended, ``command``
    ignored."""

    def program(container: Container) -> Program:
        argv = [sys.executable, "-m", "sandbox.images.echo", protocol]
        argv += ["--port", str(ECHO_PORTS[protocol])]
        argv += ["--pod", container.pod, "--namespace", container.namespace, *container.args]
        return Program(tuple(argv), PYTHON_ENV, PYTHON_FILES)

    return program


def host_program(container: Container) -> Program:
    """``sandbox/exec``: the container's command and args, a program on the host's PATH."""
    argv = (*container.command, *container.args)
    if not argv:
        raise NoCommand(f'image "{container.image}" has no command: give the container one')
    return Program(argv, BASE_ENV)


def telepresence(container: Container) -> Program:
    """Telepresence's ``tel2`` image: the traffic-agent when the args say ``agent``, else the
    traffic-manager (the image's default), from this checkout."""
    args = container.args
    if args and args[0] == "agent":
        return Program((sys.executable, "-m", "agent", *args[1:]), PYTHON_ENV, PYTHON_FILES)
    return Program((sys.executable, "-m", "manager", *args), PYTHON_ENV, PYTHON_FILES)


class ImageMap:
    """Image references to programs (see the module docstring for the matching rules).

    Args:
        repositories: images by repository path (``sandbox/http-echo``).
        names: images by the repository path's last component (``tel2``), whatever the
            registry and owner.
    """

    def __init__(
        self, repositories: Mapping[str, Image], names: Mapping[str, Image] | None = None
    ) -> None:
        self.repositories = dict(repositories)
        self.names = dict(names or {})

    def known(self) -> list[str]:
        """The image names this map runs, as the pull error lists them."""
        return [*self.repositories, *(f"*/{name}" for name in self.names)]

    def lookup(self, image: str) -> Image:
        """The image ``image`` names; UnknownImage when there is none."""
        reference = parse_reference(image)
        found = self.repositories.get(reference.path) or self.names.get(reference.name)
        if found is None:
            raise UnknownImage(image, self.known())
        return found

    def resolve(self, container: Container) -> Program:
        """What ``container`` runs; ImageError when it cannot run."""
        return self.lookup(container.image)(container)


def image_id(image: str) -> str:
    """A stable ``imageID`` for the status (``REPOSITORY@sha256:...``): the sandbox's images
    have no content, so the digest is of the reference without its tag."""
    reference = parse_reference(image)
    repository = f"{reference.registry}/{reference.path}"
    return f"{repository}@sha256:{hashlib.sha256(repository.encode()).hexdigest()}"


def default_images() -> ImageMap:
    """The images the sandbox knows (the table in the module docstring)."""
    return ImageMap(
        {
            "sandbox/http-echo": echo("http"),
            "sandbox/tcp-echo": echo("tcp"),
            "sandbox/udp-echo": echo("udp"),
            "sandbox/exec": host_program,
        },
        {"tel2": telepresence},
    )


__all__ = [
    "BASE_ENV",
    "Container",
    "Image",
    "ImageError",
    "ImageMap",
    "NoCommand",
    "Program",
    "Reference",
    "UnknownImage",
    "default_images",
    "image_id",
    "parse_reference",
]
