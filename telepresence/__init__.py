"""Telepresence: join a Kubernetes cluster's network from a laptop and intercept its traffic."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from telepresence.client import Client

__version__ = "0.1.0"

__all__ = ["Client", "__version__"]


def __getattr__(name: str) -> object:
    # The client library is imported on first use: the CLI's other commands do not need it.
    if name == "Client":
        # By name: the cluster side imports this package for its version, and must not
        # depend on the client library (an import contract checks what it imports).
        return importlib.import_module("telepresence.client").Client
    raise AttributeError(f"module 'telepresence' has no attribute {name!r}")
