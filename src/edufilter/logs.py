"""The service's named loggers, one per part a school may want to hear more or less of.

Every module logs through one of these names (logging.getLogger(logs.WORKER)); "edufilter" is
their common parent, so configuring it reaches them all.
"""

from typing import Final

DAEMON: Final = "edufilter"  # the supervisor and its control socket
WORKER: Final = "edufilter.worker"  # a worker process: policy swaps, the slow path
ENFORCE: Final = "edufilter.enforce"  # what a worker sends itself: injected packets, safe-search answers
BLOCK_PAGE: Final = "edufilter.blockpage"  # the block-page server and its review form
EVENTS: Final = "edufilter.events"  # the event database
API: Final = "edufilter.api"  # the admin API and console
HUB: Final = "edufilter.hub"  # multi-site: the NATS agent
