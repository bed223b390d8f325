"""Developer sessions: ``uv run nox -s <session>``.

Every session runs in the project's own uv-managed environment (``.venv``, synced from
``uv.lock``), so what a session checks is exactly what ``uv run`` gives a developer. uv finds a
Python 3.12 the way ``./dev`` sets it up (``UV_PYTHON``), never by downloading one.
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "typecheck", "proto_check", "tests"]
nox.options.error_on_missing_interpreters = True


def uv_run(session: nox.Session, *args: str, groups: tuple[str, ...] = ()) -> None:
    group_args = [f"--group={group}" for group in groups]
    session.run("uv", "run", "--frozen", *group_args, *args, external=True)


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite (pytest; posargs go to pytest)."""
    # The generator tests run protoc, so the tests need the proto group too.
    uv_run(session, "pytest", *session.posargs, groups=("test", "proto"))


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and format check) and the import-linter layer contracts."""
    uv_run(session, "ruff", "check", ".", groups=("lint",))
    uv_run(session, "ruff", "format", "--check", ".", groups=("lint",))
    uv_run(session, "lint-imports", groups=("lint",))


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy: strict on telepresence/wire, the checked baseline elsewhere."""
    uv_run(session, "mypy", groups=("typecheck",))


@nox.session
def proto(session: nox.Session) -> None:
    """Regenerate the control API's Python code from telepresence/wire/proto/*.proto."""
    uv_run(session, "python", "-m", "telepresence.wire.proto.generate", groups=("proto",))


@nox.session
def proto_check(session: nox.Session) -> None:
    """Fail when the generated control API code is stale."""
    uv_run(
        session, "python", "-m", "telepresence.wire.proto.generate", "--check", groups=("proto",)
    )


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmarks (posargs: which one and its flags, default ``wire``)."""
    args = session.posargs or ["wire"]
    uv_run(session, "python", "-m", "benchmarks", *args, groups=("bench",))


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site strictly (broken links fail)."""
    uv_run(session, "mkdocs", "build", "--strict", groups=("docs",))
