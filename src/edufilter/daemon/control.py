"""One daemon per state folder and per network namespace, and telling it that the compiled
policy changed: SIGHUP to the pid it wrote."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

from edufilter import logs
from edufilter.rules.netfilter import NFT_TABLE
from edufilter.errors import EdufilterError

log = logging.getLogger(logs.DAEMON)

RUN_DIR = "run"
PID_FILE = "edufilter.pid"
LOCK_FILE = "edufilter.lock"
# An abstract socket address: it lives in the network namespace (where the rules are) and
# goes away with the process that bound it, kill -9 included.
NAMESPACE_CLAIM = b"\0edufilter-daemon"


@dataclass
class DaemonClaim:
    """What a running daemon holds: the state folder's lock and the namespace's address."""

    state_dir: Path
    lock: int
    namespace: socket.socket

    def release(self) -> None:
        pid_file(self.state_dir).unlink(missing_ok=True)
        self.namespace.close()
        os.close(self.lock)


def claim_daemon(state_dir: Path, namespace_address: bytes = NAMESPACE_CLAIM) -> DaemonClaim:
    """Claim the state folder (a flock) and this network namespace, and write the pid file;
    EdufilterError when another daemon holds either: two daemons would fight over one table."""
    lock_path = Path(state_dir) / RUN_DIR / LOCK_FILE
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as error:
        raise EdufilterError(f"{lock_path}: cannot open the daemon's lock: {error.strerror}") from error
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        pid = running_pid(state_dir)
        raise EdufilterError(f"another edufilter run{f' (pid {pid})' if pid else ''} uses the state folder "
                             f"{state_dir}: stop it first") from None
    namespace = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        namespace.bind(namespace_address)
    except OSError as error:
        namespace.close()
        os.close(lock)
        if error.errno != errno.EADDRINUSE:
            raise EdufilterError(f"cannot claim the network namespace: {error.strerror}") from error
        raise EdufilterError(f"another edufilter run filters in this network namespace (its rules are table inet "
                             f"{NFT_TABLE}): stop it first, or use another namespace") from None
    try:
        pid_file(state_dir).write_text(f"{os.getpid()}\n")
    except OSError as error:  # a full disk: filtering matters more than `edufilter status`
        log.error("%s: cannot write the pid file: %s", pid_file(state_dir), error.strerror)
    return DaemonClaim(Path(state_dir), lock, namespace)


def pid_file(state_dir: Path) -> Path:
    return Path(state_dir) / RUN_DIR / PID_FILE


def running_pid(state_dir: Path) -> int | None:
    """The daemon's pid when one runs for this state directory, else None."""
    try:
        pid = int(pid_file(state_dir).read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def request_reload(state_dir: Path) -> bool:
    """Ask the daemon to map the new images; False when no daemon runs (nothing to do)."""
    pid = running_pid(state_dir)
    if pid is None:
        return False
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return False
    return True


def catch_up_images(state_dir: Path) -> int | None:
    """At the start of a process that compiles (`edufilter api`): remove the temporary images
    of compiles that died, and compile the stored policy when the live image is older (a
    change committed and then kill -9 before its compile), asking a running daemon to map
    it. The version compiled, or None when the image was current."""
    from edufilter.policy.compile import POLICY_IMAGE, compile_policy, images_dir
    from edufilter.classify.image import Image, remove_stale_temporaries
    from edufilter.policy.store import POLICY_DB, PolicyStore

    images = images_dir(state_dir)
    for removed in remove_stale_temporaries(images) if images.is_dir() else []:
        log.warning("removed %s, left by a compile that did not finish", removed)
    if not (images / POLICY_IMAGE).exists():
        return None  # nothing was ever compiled here: the daemon's start or the first change does it
    with PolicyStore(Path(state_dir) / POLICY_DB) as store:
        stored = store.version
    try:
        live = Image(images / POLICY_IMAGE).meta.get("version")
    except EdufilterError:  # damaged: compiled again
        live = None
    if live == stored:
        return None
    try:
        compile_policy(state_dir)
    except EdufilterError as error:  # the old image stays; the next change or POST /apply tries again
        log.error("policy version %d is stored but could not be compiled: %s", stored, error)
        return None
    request_reload(state_dir)
    log.warning("policy version %d was stored but not compiled (image: version %s): compiled it now", stored, live)
    return stored
