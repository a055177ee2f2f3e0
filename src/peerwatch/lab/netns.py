"""Network namespaces and the processes in them, with teardown you can rely on.

Everything the lab creates (namespaces, and through them links, bridges and
nftables rules; agent processes) is recorded in a ``Registry`` the moment it
exists, and ``Registry.teardown`` removes it in reverse order whatever
happened: normal end, an exception, Ctrl-C or SIGTERM. Deleting a namespace
deletes every link and rule inside it, so namespaces and processes are the only
two things to track.

Namespace names are ``pwlab-<pid>-<random>-...``: unique per run, so two labs
can run side by side, and tied to the pid that made them, so ``clean_stale``
can remove what a killed run (kill -9 leaves no chance to clean up) left behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

NETNS_DIR = "/run/netns"
PREFIX = "pwlab-"
_NAME_RE = re.compile(rf"^{PREFIX}(\d+)-")


class LabError(RuntimeError):
    """The lab could not build or drive its hosts; the message says what to do."""


def run_tag() -> str:
    """A per-run prefix for namespace names: ``pwlab-<pid>-<4 hex>``."""
    return f"{PREFIX}{os.getpid()}-{secrets.token_hex(2)}"


def run(argv: Sequence[str], *, check: bool = True, input: str | None = None) -> str:
    """Run a plumbing command (ip, nft, sysctl) and return its stdout; raise LabError on failure."""
    try:
        proc = subprocess.run(
            list(argv), input=input, capture_output=True, text=True, timeout=20, check=False
        )
    except FileNotFoundError as exc:
        raise LabError(f"{argv[0]} not found: install it (tools/system-deps.sh)") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{' '.join(argv)} did not finish in 20 s") from exc
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def list_namespaces() -> list[str]:
    """Names of the named network namespaces (what ``ip netns list`` shows)."""
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def lab_namespaces(tag: str = PREFIX) -> list[str]:
    return [name for name in list_namespaces() if name.startswith(tag)]


def add_namespace(name: str) -> None:
    run(["ip", "netns", "add", name])


def delete_namespace(name: str) -> None:
    """Delete a namespace; its links, bridges and nftables rules go with it."""
    run(["ip", "netns", "delete", name], check=False)


def namespace_pids(name: str) -> list[int]:
    """Processes living in namespace ``name`` (``ip netns pids``)."""
    out = run(["ip", "netns", "pids", name], check=False)
    return [int(tok) for tok in out.split() if tok.isdigit()]


def clean_stale() -> list[str]:
    """Delete lab namespaces whose creating process is gone (left by a run killed with -9)."""
    removed = []
    for name in lab_namespaces():
        match = _NAME_RE.match(name)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid != os.getpid() and not _alive(pid):
            for victim in namespace_pids(name):
                with contextlib.suppress(OSError):
                    os.kill(victim, signal.SIGKILL)
            delete_namespace(name)
            removed.append(name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Registry:
    """Everything one lab created, torn down in reverse order of creation.

    Thread-safe: the Ctrl-C path may tear down while another thread is still
    adding; whatever is added after teardown started is removed at once.
    """

    namespaces: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    closed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_namespace(self, name: str) -> None:
        with self._lock:
            if self.closed:
                raise LabError("lab is being torn down")
            self.namespaces.append(name)
        add_namespace(name)

    def forget_namespace(self, name: str) -> None:
        with self._lock:
            if name in self.namespaces:
                self.namespaces.remove(name)

    def add_process(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self.processes.append(proc)
            closed = self.closed
        if closed:  # teardown started while this one was being spawned
            kill_process(proc)
            raise LabError("lab is being torn down")

    def teardown(self) -> list[str]:
        """Kill every process, delete every namespace; return what could not be removed.

        A second Ctrl-C (or SIGTERM) while this runs is held back until the end,
        so an impatient user cannot interrupt the clean-up itself.
        """
        with self._lock:
            self.closed = True
            processes = list(reversed(self.processes))
            namespaces = list(reversed(self.namespaces))
        with interrupts_deferred():
            return self._remove(processes, namespaces)

    def _remove(self, processes: list[subprocess.Popen[bytes]], namespaces: list[str]) -> list[str]:
        for proc in processes:
            kill_process(proc)
        left = []
        for name in namespaces:
            for pid in namespace_pids(name):  # anything started in it behind our back
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            delete_namespace(name)
            if os.path.exists(os.path.join(NETNS_DIR, name)):
                left.append(name)
        return left


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM during the block, then deliver the first one that came."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame: object) -> None:
        pending.append(signum)

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        if pending:
            raise KeyboardInterrupt(signal.Signals(pending[0]).name)


def kill_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process and its process group (agents run in their own session), then reap it."""
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


# ---------------------------------------------------------------- privileges


def can_create_namespaces() -> tuple[bool, str]:
    """Whether this process can create network namespaces itself (root or CAP_SYS_ADMIN)."""
    if not sys.platform.startswith("linux"):
        return False, f"the lab needs Linux network namespaces; this is {sys.platform}"
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    if missing:
        return False, f"missing {', '.join(missing)}: run tools/system-deps.sh (iproute2, nftables)"
    if os.geteuid() != 0:
        return False, "not root"
    return True, "root"


def userns_available() -> tuple[bool, str]:
    """Whether an unprivileged user may enter a user namespace with its own network namespace."""
    if shutil.which("unshare") is None:
        return False, "unshare (util-linux) is not installed"
    try:
        proc = subprocess.run(
            ["unshare", "--user", "--map-root-user", "--net", "--mount", "true"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"unshare failed: {exc}"
    if proc.returncode != 0:
        return False, (
            "user namespaces are disabled for unprivileged users here "
            f"({proc.stderr.strip() or 'unshare failed'}); check "
            "kernel.unprivileged_userns_clone, user.max_user_namespaces and AppArmor's "
            "kernel.apparmor_restrict_unprivileged_userns, or run as root"
        )
    return True, "user namespace"


def userns_argv(argv: Sequence[str]) -> list[str]:
    """The command that re-runs ``argv`` as 'root' inside a new user + network + mount namespace."""
    return [
        "unshare",
        "--user",
        "--map-root-user",
        "--net",
        "--mount",
        "--",
        sys.executable,
        "-m",
        "peerwatch.lab.userns",
        *argv,
    ]


def prepare_netns_dir_in_userns() -> None:
    """Give ``ip netns`` a writable /run/netns inside our private mount namespace.

    The real /run/netns belongs to the real root; a tmpfs mounted over it (or,
    when it does not exist, over /run) is private to this mount namespace and
    vanishes with it, so nothing can leak to the host.
    """
    target = NETNS_DIR if os.path.isdir(NETNS_DIR) else "/run"
    run(["mount", "-t", "tmpfs", "-o", "mode=0755", "peerwatch-lab", target])
    os.makedirs(NETNS_DIR, exist_ok=True)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into KeyboardInterrupt so teardown runs for them too."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
