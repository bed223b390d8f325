"""``python -m manager``: the traffic-manager's entry point in the image (its default command).

This version has none of the traffic-manager yet: it says so and exits with status 3, so that a
Deployment running it fails visibly instead of pretending to serve. The traffic-manager arrives
with the Helm chart and ``telepresence helm install``.
"""

from __future__ import annotations

import sys

NOT_IMPLEMENTED = 3


def main() -> int:
    print(
        "traffic-manager: not implemented in this version of Telepresence (Python); it arrives "
        "with the Helm chart and `telepresence helm install`.",
        file=sys.stderr,
    )
    return NOT_IMPLEMENTED


if __name__ == "__main__":
    sys.exit(main())
