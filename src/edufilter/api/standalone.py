"""The applier and the decision engine of an API that serves a state directory beside the
daemon rather than inside it (`edufilter api`, the tests): compile the stored policy into
the live image and ask a running daemon to map it; explain decisions as `edufilter check`."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

from edufilter.api.context import Applier
from edufilter.api.observe import Explain
from edufilter.classify.engine import Explanation
from edufilter.policy.check import open_current
from edufilter.policy.compile import compile_policy
from edufilter.policy.model import ClientIdentity
from edufilter.policy.publish import request_reload


def compiling_applier(state_dir: Path) -> Applier:
    """Compile <state>/images/policy.img and signal the daemon; returns the version compiled."""

    def compile_and_reload() -> int:
        report = compile_policy(state_dir)
        request_reload(state_dir)  # no daemon running: the image waits for the next start
        assert report.version is not None
        return report.version

    async def apply() -> int:
        return await asyncio.to_thread(compile_and_reload)

    return apply


def image_explain(state_dir: Path) -> Explain:
    """Explain from the live images, or from a fresh compile when they are stale."""

    def explain(target: str, client: ClientIdentity, at: datetime) -> Explanation:
        return open_current(state_dir, at).explain(target, client, at)

    return explain
