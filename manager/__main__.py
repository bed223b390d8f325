"""``python -m manager``: the traffic-manager's entry point in the image (its default command).

It reads the settings from the environment (:mod:`manager.settings`) and the configuration
from ``CONFIG_DIR`` (:mod:`manager.config`), connects to the cluster it runs in (or, outside
a pod, to ``KUBECONFIG``'s), and runs :func:`manager.app.run` on asyncio (uvloop when it is
installed: grpclib, kubernetes-asyncio and aiodns need asyncio).

The first SIGTERM or SIGINT starts the graceful shutdown; a second one ends at once.

Exit status: 0 after a shutdown, 1 when the manager cannot start (the reason in one line on
stderr, no traceback: a bad setting, a configuration file, the TLS material, the cluster),
2 for a bad command line.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import signal
import sys
from typing import TYPE_CHECKING

import anyio

from manager.config import ConfigError, load
from manager.settings import Settings, SettingsError, configure_logging
from telepresence.wire.tls import TLSMaterialError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from manager.app import Running
    from manager.config import ManagerConfig
    from manager.kube import Kubernetes

log = logging.getLogger("manager")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
USAGE = """usage: python -m manager

The Telepresence traffic-manager. It takes no arguments: its settings come from the
environment (LOG_LEVEL, MANAGER_NAMESPACE, POD_IP, API_PORT, DATA_PORT, HEALTH_PORT,
CONFIG_DIR, TLS_DIR) and its configuration from the files in CONFIG_DIR.
"""


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments:
        if arguments in (["-h"], ["--help"]):
            print(USAGE, end="")
            return EXIT_OK
        print(USAGE, end="", file=sys.stderr)
        return EXIT_USAGE
    try:
        settings = Settings.from_environ()
        configure_logging(settings.log_level)
        config = load(settings.config_dir)
        if settings.pod_ip is None:
            log.warning("POD_IP is not set: clients cannot use the direct transport")
        backend_options = {"use_uvloop": importlib.util.find_spec("uvloop") is not None}
        anyio.run(_serve, settings, config, backend="asyncio", backend_options=backend_options)
    except KeyboardInterrupt:
        return EXIT_OK
    except BaseException as error:
        failure = _startup_error(error)
        if failure is None:
            raise
        print(f"traffic-manager: cannot start: {failure}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


async def _serve(settings: Settings, config: ManagerConfig) -> None:
    # Imported only now: kubernetes-asyncio alone takes over a second to import, and a bad
    # setting or file should be reported at once.
    from manager import app  # noqa: PLC0415

    async with _kubernetes(settings) as kubernetes, anyio.create_task_group() as tasks:
        running: Running | None = None

        async def on_signals() -> None:
            graceful = False
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if running is not None and not graceful:
                        log.info("%s: shutting down gracefully (send it again to stop now)", name)
                        running.shutdown()
                        graceful = True
                        continue
                    log.info("%s: stopping now", name)
                    tasks.cancel_scope.cancel()
                    return

        tasks.start_soon(on_signals, name="signals")
        running = await tasks.start(app.run, settings, config, kubernetes, name="traffic-manager")
        await running.stopped.wait()
        tasks.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def _kubernetes(settings: Settings) -> AsyncIterator[Kubernetes]:
    from manager import kube  # noqa: PLC0415 (see _serve)

    if settings.kubernetes_service_host or settings.kubeconfig is None:
        async with kube.in_cluster() as kubernetes:
            yield kubernetes
    else:
        log.info("not in a pod: using the cluster of %s", settings.kubeconfig)
        async with kube.from_kubeconfig(settings.kubeconfig) as kubernetes:
            yield kubernetes


def _startup_error(error: BaseException) -> BaseException | None:
    """The expected start-up failure in ``error`` (possibly inside exception groups): a bad
    setting, file or TLS material, the cluster out of reach, a port taken."""
    kube = sys.modules.get("manager.kube")
    expected: tuple[type[BaseException], ...] = (
        SettingsError,
        ConfigError,
        TLSMaterialError,
        OSError,
    )
    if kube is not None:
        expected += (kube.KubernetesError,)
    if isinstance(error, expected):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _startup_error(inner)
            if found is not None:
                return found
    return None


if __name__ == "__main__":
    sys.exit(main())
