"""``python -m telepresence.daemon user|root [--log-level LEVEL]``: run a daemon.

The instance lock is the first thing taken, before the daemon's imports (most of its start):
from then on clients know it is starting (:func:`telepresence.daemon._process.is_running`),
and a second one started by a race exits at once.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m telepresence.daemon")
    parser.add_argument("kind", choices=["user", "root"])
    parser.add_argument("--log-level", default=None)
    arguments = parser.parse_args(argv)

    from telepresence import errors  # noqa: PLC0415  # after the arguments: --help stays quick
    from telepresence.daemon import _process  # noqa: PLC0415

    kind = _process.CONNECTOR if arguments.kind == "user" else _process.ROOT_DAEMON
    try:
        _process.take_instance_lock(kind)
    except errors.DaemonError as error:
        print(f"telepresence {kind.title}: {error}", file=sys.stderr)
        return 1
    from telepresence.daemon._main import run  # noqa: PLC0415

    return run(kind, arguments.log_level)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
