"""``python -m telepresence.daemon user|root [--detach] [--log-level LEVEL]``.

``--detach`` starts the daemon as a process of its own session (stdin from /dev/null, output
appended to its log file), prints its process id and exits, without importing the daemon:
that is how a client starts one (:func:`telepresence.daemon._process.ensure_running`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m telepresence.daemon")
    parser.add_argument("kind", choices=["user", "root"])
    parser.add_argument("--detach", action="store_true")
    parser.add_argument("--log-level", default=None)
    arguments = parser.parse_args(argv)
    if arguments.detach:
        return _detach(arguments.kind, argv)
    from telepresence.daemon import run  # noqa: PLC0415  # not needed to detach

    return run(arguments.kind, arguments.log_level)


def _detach(kind: str, argv: list[str]) -> int:
    from telepresence.daemon._process import CONNECTOR, ROOT_DAEMON  # noqa: PLC0415

    log_file = (CONNECTOR if kind == "user" else ROOT_DAEMON).log_file
    log_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(os.devnull, "rb") as stdin, open(log_file, "ab") as output:
        process = subprocess.Popen(  # this interpreter, this module
            [sys.executable, "-m", "telepresence.daemon", *(a for a in argv if a != "--detach")],
            stdin=stdin,
            stdout=output,
            stderr=output,
            start_new_session=True,
            close_fds=True,
        )
    print(process.pid)
    # Not waited for: the daemon outlives this process, and init adopts it.
    process.returncode = 0  # so that Popen does not warn about a child still running
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
