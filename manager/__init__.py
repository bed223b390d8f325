"""The traffic-manager: control API, session registry, outbound relay, agent injector."""
