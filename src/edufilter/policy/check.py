"""An engine for one question (`edufilter check`, `POST /check`, a preview): the live images
when they answer it, else a policy image compiled for the question into a temporary file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from edufilter.classify.engine import Engine
from edufilter.classify.image import CHECK_PREFIX
from edufilter.errors import PolicyError
from edufilter.policy.compile import compile_policy
from edufilter.policy.model import Policy
from edufilter.policy.store import PolicyStore
from edufilter.state import StateDir


def open_current(state_dir: Path, at: datetime | None = None) -> Engine:
    """An engine on the stored policy as it is now: the live images when they are current
    and cover `at`, else a policy image compiled for the question into a temporary file."""
    state_dir = Path(state_dir)
    state = StateDir(state_dir)
    with PolicyStore.for_reading(state.policy_db) as store:
        version = store.version
    if state.policy_image.exists():
        try:
            engine = Engine.open(state_dir)
            if engine.version == version and (at is None or engine.covers(at)):
                return engine
        except PolicyError:
            pass  # stale or from other lists: compile a fresh one below
    return _compiled(state_dir, at)


def open_assumed(state_dir: Path, at: datetime, assume: Callable[[Policy], Policy]) -> Engine:
    """An engine on the stored policy as `assume` would change it: what a change not saved
    yet would decide (a preview); PolicyError when the changed policy is not valid."""
    return _compiled(Path(state_dir), at, assume)


def _compiled(state_dir: Path, at: datetime | None, assume: Callable[[Policy], Policy] | None = None) -> Engine:
    """An engine on a policy image compiled for the question into a temporary file."""
    state = StateDir(state_dir)
    images = state.images
    descriptor, temporary = tempfile.mkstemp(prefix=CHECK_PREFIX, suffix=".img", dir=images if images.exists() else None)
    os.close(descriptor)
    lists = state.lists_image
    try:
        report = compile_policy(state_dir, now=at, out=Path(temporary), assume=assume)
        lists = report.lists_path or lists
        engine = Engine(state.categories_image, lists, Path(temporary))
    finally:
        # The mappings keep the data for as long as the engine lives; the live images stay.
        os.unlink(temporary)
        if lists != state.lists_image:
            lists.unlink(missing_ok=True)
    return engine
