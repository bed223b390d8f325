"""The sandbox cluster: a local Kubernetes stand-in that real clients (kubectl,
kubernetes-asyncio, Helm) use unchanged. ``python -m sandbox apiserver --dir DIR`` runs its
API server; see docs/sandbox.md."""
