"""Test hosts on this machine: each node is a network namespace on a private bridge, with its own address in
the project's test range (nothing is routed anywhere else), and a mount namespace in which it sees the checkout
at /srv/swarm, its own /srv/swarm-data, private overlays of /etc and /var/lib and a private /tmp.

Every process on a host enters both namespaces of the host's holder process (``nsenter``); the host's
folders live on tmpfs inside its mount namespace, so they vanish with it. The test reads and writes them
through ``/proc/<holder>/root``. Names and addresses are fixed, so one test session at a time owns the hosts
(a lock file); ``release_hosts`` removes whatever it (or a crashed earlier session) left."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import time
from pathlib import Path

from testkit.cluster import REPO, Proc, wait_until

PREFIX = "swe2e"
BRIDGE = f"{PREFIX}-br"
SUBNET = "10.231.0"
RUNNER_ADDRESS = f"{SUBNET}.254"  # the test process's own end of the bridge
LOCK = Path("/run/lock/swe2e.lock")
_held: list[int] = []  # the lock's descriptor while this process owns the test hosts

# Run by the holder inside `ip netns exec NS unshare --mount --propagation private`; $1 is the checkout.
_MOUNTS = """set -e
mount -t tmpfs -o mode=0755 swarm-node /mnt
mkdir /mnt/etc /mnt/etc.work /mnt/var-lib /mnt/var-lib.work
mount -t overlay swarm-etc -o lowerdir=/etc,upperdir=/mnt/etc,workdir=/mnt/etc.work /etc
mount -t overlay swarm-var-lib -o lowerdir=/var/lib,upperdir=/mnt/var-lib,workdir=/mnt/var-lib.work /var/lib
mount -t tmpfs -o mode=0755 swarm-srv /srv
mkdir /srv/swarm /srv/swarm-data
mount --bind "$1" /srv/swarm
mount -t tmpfs -o mode=1777 swarm-tmp /tmp
# A checkout under /tmp (a CI clone) stays at its own path too: its venv's scripts name that interpreter.
case "$1" in /tmp/*) mkdir -p "$1" && mount --bind /srv/swarm "$1" ;; esac
touch /mnt/ready
exec sleep infinity
"""
_PRIVATE_MOUNTS = ["unshare", "--mount", "--propagation", "private", "sh", "-c", _MOUNTS, "sh"]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def _our_namespaces() -> list[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30).stdout
    return [line.split()[0] for line in listing.splitlines() if line.startswith(f"{PREFIX}-")]


def _pids_in(netns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, timeout=30).stdout
    return [int(pid) for pid in out.split()]


def _own_hosts(wait_s: float) -> bool:
    """Take the lock on the test hosts, waiting up to ``wait_s`` for another session to let go of it."""
    if _held:
        return True
    fd = os.open(LOCK, os.O_CREAT | os.O_RDWR, 0o600)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _held.append(fd)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return False
            time.sleep(1)


def release_hosts() -> None:
    """Remove the test hosts and let go of them, unless another session is using them right now."""
    if _own_hosts(0):
        _remove_all()
        while _held:
            os.close(_held.pop())


def _remove_all() -> None:
    """Kill every process in our namespaces, delete them and the bridge (their veth pairs go with them)."""
    for netns in _our_namespaces():
        for pid in _pids_in(netns):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_until(lambda ns=netns: not _pids_in(ns), 10, f"the processes in {netns} to exit", every=0.1)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, timeout=30)
    # A deleted namespace's veth pairs go when the kernel frees it, which can take a while: delete them now.
    for link in _our_links():
        subprocess.run(["ip", "link", "del", link], capture_output=True, timeout=30)


def _our_links() -> list[str]:
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, timeout=30).stdout
    return [line.split(": ")[1].split("@")[0] for line in links.splitlines() if f": {PREFIX}-" in line]


def leftovers() -> list[str]:
    """Our namespaces and links that still exist (empty after ``release_hosts``)."""
    return _our_namespaces() + _our_links()


class Host:
    """One node: its namespaces are those of a holder process (``sleep``) that set up its mounts."""

    def __init__(self, name: str, address: str, log_dir: Path) -> None:
        self.name = name
        self.address = address
        self.netns = f"{PREFIX}-{name}"
        self.log_dir = log_dir
        self.holder = Proc(
            f"{name}-holder",
            ["ip", "netns", "exec", self.netns, *_PRIVATE_MOUNTS, str(REPO)],
            {"PATH": os.environ["PATH"]},
            log_dir,
        )

        def ready() -> bool:
            if self.holder.popen.poll() is not None:
                raise AssertionError(f"{name}'s mount namespace failed:\n{self.holder.tail()}")
            return self.path("/mnt/ready").exists()

        wait_until(ready, 30, f"{name}'s mounts", every=0.1)

    def path(self, inside: str) -> Path:
        """A path as this host sees it, reachable from the test process."""
        return Path(f"/proc/{self.holder.popen.pid}/root") / inside.lstrip("/")

    def command(self, args: list[str], cwd: str = "/") -> list[str]:
        # nsenter's own --wd opens the folder before entering: env changes to it inside
        return ["nsenter", f"--target={self.holder.popen.pid}", "--net", "--mount", "env", f"--chdir={cwd}", *args]

    def start(self, name: str, args: list[str], env: dict[str, str], cwd: str = "/") -> Proc:
        """A long-running process on this host (its own process group; env never on a command line)."""
        return Proc(f"{self.name}-{name}", self.command(args, cwd), env, self.log_dir)

    def try_run(
        self, args: list[str], env: dict[str, str] | None = None, cwd: str = "/", timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(args, cwd), env=env or {}, capture_output=True, text=True, timeout=timeout)

    def run(self, args: list[str], env: dict[str, str], cwd: str = "/", timeout: float = 120) -> str:
        done = self.try_run(args, env, cwd, timeout)
        assert done.returncode == 0, (
            f"{self.name}: {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
        return done.stdout


class Network:
    """A bridge with the test process at RUNNER_ADDRESS and one veth pair per host; every host knows every
    other host by name (its /etc/hosts)."""

    def __init__(self, hosts: dict[str, int], log_dir: Path) -> None:
        if not _own_hosts(900):
            raise AssertionError(f"another test session has held the test hosts ({LOCK}) for 15 minutes")
        try:
            self._build(hosts, log_dir)
        except BaseException:
            release_hosts()
            raise

    def _build(self, hosts: dict[str, int], log_dir: Path) -> None:
        _remove_all()  # what a killed earlier session left
        self.hosts: dict[str, Host] = {}
        _ip("link", "add", BRIDGE, "type", "bridge")
        _ip("addr", "add", f"{RUNNER_ADDRESS}/24", "dev", BRIDGE)
        _ip("link", "set", BRIDGE, "up")
        names = "".join(f"{SUBNET}.{octet} {name}\n" for name, octet in hosts.items())
        for name, octet in hosts.items():
            netns, veth = f"{PREFIX}-{name}", f"{PREFIX}-{name}"
            _ip("netns", "add", netns)
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
            _ip("link", "set", veth, "master", BRIDGE, "up")
            _ip("-n", netns, "addr", "add", f"{SUBNET}.{octet}/24", "dev", "eth0")
            _ip("-n", netns, "link", "set", "eth0", "up")
            _ip("-n", netns, "link", "set", "lo", "up")
            host = Host(name, f"{SUBNET}.{octet}", log_dir)
            host.path("/etc/hosts").write_text(f"127.0.0.1 localhost\n{names}")
            self.hosts[name] = host

    def close(self) -> None:
        release_hosts()
