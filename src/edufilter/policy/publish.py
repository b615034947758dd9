"""The last step of a policy change: telling the running daemon that new images are ready
(SIGHUP to the pid it wrote), and catching up a change that was stored but never compiled."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

from edufilter.classify.image import Image, remove_stale_temporaries
from edufilter.errors import EdufilterError
from edufilter.policy.compile import compile_policy
from edufilter.policy.store import PolicyStore
from edufilter.state import StateDir

log = logging.getLogger("edufilter")

def running_pid(state_dir: Path) -> int | None:
    """The daemon's pid when one runs for this state directory, else None."""
    try:
        pid = int(StateDir(state_dir).pid_file.read_text().strip())
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
    state = StateDir(state_dir)
    for removed in remove_stale_temporaries(state.images) if state.images.is_dir() else []:
        log.warning("removed %s, left by a compile that did not finish", removed)
    if not state.policy_image.exists():
        return None  # nothing was ever compiled here: the daemon's start or the first change does it
    with PolicyStore(state.policy_db) as store:
        stored = store.version
    try:
        live = Image(state.policy_image).meta.get("version")
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
