"""Telepresence: join a Kubernetes cluster's network from a laptop and intercept its traffic."""

from __future__ import annotations

__version__ = "0.1.0"
