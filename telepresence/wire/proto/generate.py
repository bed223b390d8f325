"""Generate the control API's Python code from the ``.proto`` files beside this module.

``python -m telepresence.wire.proto.generate`` (the ``proto`` nox session) compiles every
``*.proto`` in this directory into three modules each:

- ``<name>_pb2.py``: the messages (protoc's ``--python_out``);
- ``<name>_pb2.pyi``: their type stubs (``--pyi_out``);
- ``<name>_grpc.py``: the grpclib service base class and client stub (``--grpclib_python_out``,
  the protoc plugin that ships with grpclib).

The compiler is the protoc that grpcio-tools bundles, pinned in the ``proto`` dependency group:
the same inputs and the same pins give the same bytes, which is what makes ``--check`` (the
``proto_check`` nox session, run in CI) meaningful. protoc is given the source root (the
directory holding the ``telepresence`` package) as the import path of our files, so a file's path
below that root is also its module path and the generated modules import each other as
``telepresence.wire.proto.manager_pb2``, whatever the working directory.

Everything is compiled into a temporary directory first. Then the checked-in files are either
replaced by the results (files no ``.proto`` produces any more are removed), or, with
``--check``, only compared with them byte for byte. Every function takes the directories it works
on, so tests run it against a copy of the tree.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

PROTO_DIR = Path(__file__).resolve().parent
"""Where the ``.proto`` files and the generated modules live."""

SOURCE_ROOT = PROTO_DIR.parents[2]
"""The directory that holds the ``telepresence`` package: protoc's import path for our files."""

GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_grpc.py")
"""Names ending in one of these, in the proto directory, belong to the generator."""

REGENERATE_COMMAND = "uv run nox -s proto"

PLUGIN_NAME = "protoc-gen-grpclib_python"


class GenerateError(Exception):
    """The compiler or its plugin is missing, or protoc rejected a ``.proto`` file."""


@dataclass(frozen=True, slots=True)
class Difference:
    """One generated file whose checked-in state is not what the generator produces.

    Attributes:
        name: The file's name in the proto directory.
        reason: ``"missing"``, ``"out of date"`` or ``"not generated from any .proto file"``.
    """

    name: str
    reason: str


def compile_protos(proto_dir: Path, source_root: Path) -> dict[str, bytes]:
    """Compile every ``*.proto`` in ``proto_dir`` and return the generated files.

    Args:
        proto_dir: The directory of ``.proto`` files; must be inside ``source_root``.
        source_root: The import root; ``proto_dir``'s path below it is the generated package.

    Returns:
        The generated files' contents, by file name, sorted by name.

    Raises:
        GenerateError: There is nothing to compile, a tool is missing, or protoc failed.
    """
    proto_dir = proto_dir.resolve()
    source_root = source_root.resolve()
    if not proto_dir.is_relative_to(source_root):
        raise GenerateError(f"{proto_dir} is not inside the source root {source_root}")
    protos = sorted(proto_dir.glob("*.proto"))
    if not protos:
        raise GenerateError(f"no .proto files in {proto_dir}")

    with tempfile.TemporaryDirectory(prefix="telepresence-proto-") as temporary:
        out = Path(temporary)
        command = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            # Our files first, so that a name of ours never resolves to a bundled file.
            f"--proto_path={source_root}",
            f"--proto_path={_well_known_protos()}",
            f"--plugin={PLUGIN_NAME}={_grpclib_plugin()}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpclib_python_out={out}",
            *(str(proto) for proto in protos),
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise GenerateError(f"protoc failed:\n{result.stderr.strip()}")
        package_dir = out / proto_dir.relative_to(source_root)
        return {
            path.name: path.read_bytes() for path in sorted(package_dir.iterdir()) if path.is_file()
        }


def differences(generated: Mapping[str, bytes], proto_dir: Path) -> list[Difference]:
    """Compare freshly generated files with those in ``proto_dir``.

    Args:
        generated: The output of :func:`compile_protos`.
        proto_dir: The directory holding the checked-in generated files.

    Returns:
        One entry per file that is missing, differs, or is left over from a removed ``.proto``,
        sorted by name; empty when the directory is up to date.
    """
    found: list[Difference] = []
    for name, content in generated.items():
        path = proto_dir / name
        if not path.is_file():
            found.append(Difference(name, "missing"))
        elif path.read_bytes() != content:
            found.append(Difference(name, "out of date"))
    for path in _generated_files(proto_dir):
        if path.name not in generated:
            found.append(Difference(path.name, "not generated from any .proto file"))
    return sorted(found, key=lambda difference: difference.name)


def write(generated: Mapping[str, bytes], proto_dir: Path) -> list[Difference]:
    """Bring ``proto_dir`` up to date: write what differs, remove generated leftovers.

    Files that are already up to date are not touched, so their modification times stay.

    Returns:
        What was changed, as :func:`differences` saw it before.
    """
    changes = differences(generated, proto_dir)
    for change in changes:
        path = proto_dir / change.name
        if change.name in generated:
            path.write_bytes(generated[change.name])
        else:
            path.unlink()
    return changes


def check(proto_dir: Path = PROTO_DIR, source_root: Path = SOURCE_ROOT) -> list[Difference]:
    """Compile the ``.proto`` files and report how ``proto_dir`` differs from the result.

    Nothing in ``proto_dir`` is changed.
    """
    return differences(compile_protos(proto_dir, source_root), proto_dir)


def main(
    argv: Sequence[str] | None = None,
    *,
    proto_dir: Path = PROTO_DIR,
    source_root: Path = SOURCE_ROOT,
) -> int:
    """Run the generator; returns the process exit status.

    Args:
        argv: The command-line arguments (default: ``sys.argv[1:]``).
        proto_dir: The directory of ``.proto`` files and generated modules.
        source_root: The import root that ``proto_dir`` is inside.
    """
    parser = argparse.ArgumentParser(
        prog="python -m telepresence.wire.proto.generate",
        description="Generate the control API's Python code from telepresence/wire/proto/*.proto.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; fail if the checked-in generated files are not up to date",
    )
    arguments = parser.parse_args(argv)

    try:
        generated = compile_protos(proto_dir, source_root)
    except GenerateError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    if arguments.check:
        stale = differences(generated, proto_dir)
        for difference in stale:
            print(f"{_shown(proto_dir / difference.name)}: {difference.reason}", file=sys.stderr)
        if stale:
            print(
                f"The generated control API code is stale: run `{REGENERATE_COMMAND}` "
                "and commit the result.",
                file=sys.stderr,
            )
            return 1
        print(f"{len(generated)} generated files are up to date.")
        return 0

    changes = write(generated, proto_dir)
    for change in changes:
        action = "removed" if change.name not in generated else "wrote"
        print(f"{action} {_shown(proto_dir / change.name)} ({change.reason})")
    if not changes:
        print(f"{len(generated)} generated files were already up to date.")
    return 0


def _generated_files(proto_dir: Path) -> list[Path]:
    if not proto_dir.is_dir():
        return []
    return sorted(
        path
        for path in proto_dir.iterdir()
        if path.is_file() and path.name.endswith(GENERATED_SUFFIXES)
    )


def _well_known_protos() -> Path:
    """The google/protobuf/*.proto files that grpcio-tools bundles with its protoc."""
    # find_spec only locates the package; importing grpc_tools.protoc here would install its
    # import hooks for .proto files in this process.
    spec = importlib.util.find_spec("grpc_tools")
    if spec is None or not spec.submodule_search_locations:
        raise GenerateError(
            "grpcio-tools is not installed; run the generator in the `proto` dependency group: "
            f"`{REGENERATE_COMMAND}`"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "_proto"


def _grpclib_plugin() -> Path:
    """grpclib's protoc plugin, installed as a script beside the running interpreter."""
    # Not resolved: in a virtual environment the interpreter is a symlink out of it, and the
    # script is next to the link.
    beside = Path(sys.executable).parent / PLUGIN_NAME
    if beside.is_file():
        return beside
    found = shutil.which(PLUGIN_NAME)
    if found is None:
        raise GenerateError(f"{PLUGIN_NAME} not found (it is installed with grpclib)")
    return Path(found)


def _shown(path: Path) -> str:
    """``path`` as a person wants to read it: relative to the working directory if below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
