"""``python -m agent``: the traffic-agent's entry point in the image (``agent`` as its command).

This version has none of the traffic-agent yet: it says so and exits with status 3, so that a
sidecar running it fails visibly instead of pretending to serve. The traffic-agent arrives with
intercepts.
"""

from __future__ import annotations

import sys

NOT_IMPLEMENTED = 3


def main() -> int:
    print(
        "traffic-agent: not implemented in this version of Telepresence (Python); it arrives "
        "with intercepts.",
        file=sys.stderr,
    )
    return NOT_IMPLEMENTED


if __name__ == "__main__":
    sys.exit(main())
