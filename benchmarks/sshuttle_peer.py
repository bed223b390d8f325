"""The peer of ``python -m benchmarks connect``: sshuttle 2.0 to an sshd running as a pod.

sshuttle (the Python VPN over ssh that Telepresence is most often compared with) needs an ssh
server it can log in to, with Python on it. Here that is Debian's OpenSSH server, run as a
pod of the ``sandbox/exec`` image (a host program in the pod's network namespace), with
everything it reads generated into a directory of the benchmark's own:

- :func:`ensure_openssh_server` installs the ``openssh-server`` package when ``/usr/sbin/sshd``
  is missing, with a ``policy-rc.d`` that forbids starting services (Debian's postinst would
  otherwise start the system's sshd); the benchmark never starts or enables that service,
  and stops by PID any sshd the installation started anyway;
- :func:`make_files` writes a host key, a client key, ``authorized_keys``, a ``known_hosts``
  for the host key and an ``sshd_config`` that reads only those, and the privilege
  separation directory (a ``hostPath`` volume mounted at ``/run/sshd``: sshd refuses one
  that others may write, which an emptyDir, mode 0777, is);
- :func:`pod_manifest` is the pod: ``/usr/sbin/sshd -D -e -f CONFIG`` as its container;
- :func:`running_sshuttle` runs ``sshuttle --method nft --dns -r root@POD`` in the
  workstation for the cluster's subnets until the block ends, then interrupts it (by PID,
  as a user presses Ctrl-C) and checks that its nftables table is gone.

The workstation must reach the sshd pod's address (as a real sshuttle user must reach their
ssh server); the benchmark opens that one address through the sandbox's fabric.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sandbox.cluster import control

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

SSHD = Path("/usr/sbin/sshd")
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
#: Exit status 101 of policy-rc.d: "action forbidden by policy", so invoke-rc.d starts nothing.
FORBID_SERVICES = "#!/bin/sh\n# written by python -m benchmarks connect for one install\nexit 101\n"
SSHUTTLE = str(Path(sys.executable).with_name("sshuttle"))
#: The line sshuttle's client logs once its firewall rules are in and the server answers.
SSHUTTLE_READY = "Connected to server."
SSHUTTLE_TIMEOUT = 60.0
#: ``ssh -o HostKeyAlias``: the name the generated known_hosts gives the pod's host key, so
#: the check does not depend on the address the pod gets.
HOST_ALIAS = "sshd-benchmark"
SSH_PORT = 22


def _sshd_pids() -> set[int]:
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(entry / "exe") == str(SSHD):
                    pids.add(int(entry.name))
    return pids


def ensure_openssh_server(say: Callable[[str], None]) -> str:
    """Install Debian's openssh-server when sshd is missing; what was done, in one line."""
    if SSHD.exists():
        return "openssh-server was installed already"
    before = _sshd_pids()
    wrote_policy = not POLICY_RC_D.exists()
    if wrote_policy:
        POLICY_RC_D.write_text(FORBID_SERVICES)
        POLICY_RC_D.chmod(0o755)
    environment = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        for argv in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "openssh-server"],
        ):
            say(" ".join(argv))
            done = subprocess.run(
                argv, env=environment, capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                raise SystemExit(f"{' '.join(argv)} failed:\n{done.stdout}{done.stderr}")
    finally:
        if wrote_policy:
            POLICY_RC_D.unlink()
    started = sorted(_sshd_pids() - before)
    for pid in started:  # policy-rc.d should have made this impossible; stop it anyway
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    note = "installed openssh-server (policy-rc.d: no service started)"
    if started:
        note += f"; its postinst started sshd anyway, stopped: PIDs {started}"
    return note


@dataclass(frozen=True, slots=True)
class SshdFiles:
    """What :func:`make_files` wrote."""

    directory: Path
    config: Path
    client_key: Path
    known_hosts: Path
    privsep: Path

    def ssh_command(self) -> str:
        """The ``ssh`` command line sshuttle runs (``--ssh-cmd``)."""
        return shlex.join([
            "ssh", "-i", str(self.client_key), "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", f"HostKeyAlias={HOST_ALIAS}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
        ])  # fmt: skip


def make_files(directory: Path) -> SshdFiles:
    """Keys and configuration for the sshd pod and its client, in ``directory`` (made anew:
    a run with the same ``--dir`` gets new keys)."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(mode=0o700, parents=True)
    host_key, client_key = directory / "ssh_host_ed25519_key", directory / "client_ed25519"
    for key in (host_key, client_key):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "connect-benchmark", "-f",
             str(key)],
            check=True, capture_output=True,
        )  # fmt: skip
    authorized = directory / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    known_hosts = directory / "known_hosts"
    known_hosts.write_text(f"{HOST_ALIAS} {host_key.with_suffix('.pub').read_text()}")
    privsep = directory / "privsep"  # /run/sshd in the pod: root's, not writable by others
    privsep.mkdir()
    privsep.chmod(0o755)
    config = directory / "sshd_config"
    config.write_text(
        "\n".join([
            f"Port {SSH_PORT}",
            f"HostKey {host_key}",
            f"AuthorizedKeysFile {authorized}",
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            # The keys live in a temporary directory under /tmp (mode 1777), which
            # StrictModes refuses as a parent of authorized_keys.
            "StrictModes no",
            "PidFile none",
            "AllowTcpForwarding yes",
            "LogLevel INFO",
            "",
        ])
    )  # fmt: skip
    return SshdFiles(directory, config, client_key, known_hosts, privsep)


def pod_manifest(files: SshdFiles) -> str:
    """The sshd pod (``app: sshd``), ready when it accepts connections on port 22."""
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: sshd, labels: {{app: sshd}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: sshd
      image: sandbox/exec
      command: [{SSHD}, -D, -e, -f, "{files.config}"]
      readinessProbe: {{tcpSocket: {{port: {SSH_PORT}}}, periodSeconds: 1}}
      volumeMounts: [{{name: privsep, mountPath: /run/sshd}}]
  volumes:
    - {{name: privsep, hostPath: {{path: "{files.privsep}", type: Directory}}}}
"""


def _nft_tables(directory: Path) -> list[str]:
    argv, env = control.workstation_argv(directory, ["nft", "list", "tables"])
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    return done.stdout.splitlines()


@contextlib.contextmanager
def running_sshuttle(
    directory: Path,
    files: SshdFiles,
    server: str,
    subnets: list[str],
    log: Path,
    *,
    notes: list[str] | None = None,
) -> Iterator[int]:
    """sshuttle in the workstation, tunnelling ``subnets`` and the workstation's DNS queries
    (``--dns``: answered by the server's resolver, the pod's, so the cluster DNS) through
    ``root@server``; yields its PID once connected. Afterwards it is interrupted, and should
    have removed its table: one it left behind (it would redirect the next paths' traffic to
    nobody) is deleted here, and said in ``notes``."""
    command = [
        SSHUTTLE, "--method", "nft", "--dns", "--python", "python3", "-r", f"root@{server}",
        "--ssh-cmd", files.ssh_command(), *subnets,
    ]  # fmt: skip
    argv, env = control.workstation_argv(directory, command)
    with log.open("wb") as output:
        process = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=output
        )
    try:
        _wait_ready(process, log)
        yield process.pid
    finally:
        # sshuttle's client restores the firewall on KeyboardInterrupt (on SIGTERM only
        # when it runs as a daemon).
        if process.poll() is None:
            os.kill(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
    left = [line for line in _nft_tables(directory) if "sshuttle" in line]
    for table in left:  # "table inet sshuttle-ipv4-12300"
        argv, env = control.workstation_argv(directory, ["nft", "delete", *table.split()])
        subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    if left:
        note = f"sshuttle left its nftables table behind after interruption (deleted): {left}"
        print(f"  {note}", file=sys.stderr)
        if notes is not None:
            notes.append(note)


def _wait_ready(process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + SSHUTTLE_TIMEOUT
    while SSHUTTLE_READY not in (text := log.read_text(errors="replace")):
        if process.poll() is not None:
            raise SystemExit(f"sshuttle exited ({process.returncode}) before it connected:\n{text}")
        if time.monotonic() > deadline:
            raise SystemExit(f"sshuttle did not connect in {SSHUTTLE_TIMEOUT:.0f} s:\n{text}")
        time.sleep(0.05)
