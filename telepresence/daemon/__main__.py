"""``python -m telepresence.daemon user|root [--log-level LEVEL]``, and its ``--detach``.

``--detach --log-file FILE`` starts the daemon as a process of its own session (stdin from
/dev/null, output appended to FILE), prints its process id and exits at once, importing
nothing of the daemon: that is how a client starts one
(:func:`telepresence.daemon._process.ensure_running`).
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
    parser.add_argument("--log-file")
    parser.add_argument("--log-level", default=None)
    arguments = parser.parse_args(argv)
    if arguments.detach:
        if not arguments.log_file:
            parser.error("--detach needs --log-file")
        return _detach(arguments)
    from telepresence.daemon._main import run  # noqa: PLC0415  # not needed to detach

    return run(arguments.kind, arguments.log_level)


def _detach(arguments: argparse.Namespace) -> int:
    log_file = arguments.log_file
    os.makedirs(os.path.dirname(log_file), mode=0o700, exist_ok=True)
    command = [sys.executable, "-m", "telepresence.daemon", arguments.kind]
    if arguments.log_level:
        command += ["--log-level", arguments.log_level]
    with open(os.devnull, "rb") as stdin, open(log_file, "ab") as output:
        process = subprocess.Popen(
            command,
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
