"""A Kubernetes API server emulator: HTTPS, discovery, CRUD, watch, patch, RBAC, admission."""
