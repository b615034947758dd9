"""One daemon per state folder and per network namespace: the lock, the namespace claim and
the pid file (which policy/publish.py signals when new images are ready)."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from edufilter.errors import EdufilterError
from edufilter.policy.publish import running_pid
from edufilter.rules.netfilter import NFT_TABLE
from edufilter.state import StateDir

log = logging.getLogger("edufilter")

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
        StateDir(self.state_dir).pid_file.unlink(missing_ok=True)
        self.namespace.close()
        os.close(self.lock)


def claim_daemon(state_dir: Path, namespace_address: bytes = NAMESPACE_CLAIM) -> DaemonClaim:
    """Claim the state folder (a flock) and this network namespace, and write the pid file;
    EdufilterError when another daemon holds either: two daemons would fight over one table."""
    lock_path = StateDir(state_dir).lock_file
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
        StateDir(state_dir).pid_file.write_text(f"{os.getpid()}\n")
    except OSError as error:  # a full disk: filtering matters more than `edufilter status`
        log.error("%s: cannot write the pid file: %s", StateDir(state_dir).pid_file, error.strerror)
    return DaemonClaim(Path(state_dir), lock, namespace)
