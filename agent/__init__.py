"""The traffic-agent: the sidecar that sends a workload's traffic to a laptop."""
