"""``python -m benchmarks NAME [options]``: run one benchmark and print its table."""

from __future__ import annotations

import sys

BENCHMARKS = {
    "wire": "benchmarks.wire",
    "apiserver": "benchmarks.apiserver",
    "sandbox": "benchmarks.sandbox",
    "manager": "benchmarks.manager",
    "connect": "benchmarks.connect",
    "relays": "benchmarks.relays",
}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in BENCHMARKS:
        names = ", ".join(BENCHMARKS)
        print(f"usage: python -m benchmarks {{{names}}} [--json FILE] [options]", file=sys.stderr)
        return 2
    import importlib

    module = importlib.import_module(BENCHMARKS[sys.argv[1]])
    result: int = module.main(sys.argv[2:])
    return result


if __name__ == "__main__":
    sys.exit(main())
