"""The ``telepresence`` console script.

For ``connect``, the daemons that do not run yet are started first thing, before the CLI's
own imports: they take most of a cold connect's time, and so start while the CLI does
(``Client.connect`` then waits for them, and starts them itself when this did not). Then the
command line runs as usual (:func:`telepresence.cli.main`).
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    arguments = sys.argv[1:]
    if arguments[:1] == ["connect"] and not {"--help", "-h"} & set(arguments):
        from telepresence.daemon import _process  # noqa: PLC0415

        kinds = [_process.CONNECTOR]
        if os.geteuid() == 0:  # Client.connect's rule for the root daemon
            kinds.append(_process.ROOT_DAEMON)
        _process.spawn_missing(kinds)
    from telepresence.cli import main as cli  # noqa: PLC0415

    cli()
