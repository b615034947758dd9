"""One error tree: every failure a user should read ends up as an EdufilterError."""


class EdufilterError(Exception):
    """Base of the errors edufilter reports to people (CLI message, API problem)."""


class CaptureFileError(EdufilterError):
    """A capture file that cannot be read: unknown format, bad header, cut short."""


class PolicyError(EdufilterError):
    """A policy object, list file or image that is invalid; the message names the field."""


class TableFormatError(PolicyError):
    """A domain-table section of an image that is truncated or inconsistent."""


class HashCollision(PolicyError):
    """Two different names share a 64-bit hash under a domain table's seed; compile again with another."""


class KernelError(EdufilterError):
    """A request the kernel refused or could not answer; errno is its reason, None when it gave none
    (a timeout, a check of our own before the request)."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class NetfilterError(KernelError):
    """edufilter's netfilter rules or conntrack marks could not be read or changed."""


class QueueError(KernelError):
    """An NFQUEUE queue that cannot be bound or used; the message names the queue and errno."""


class StorageFullError(EdufilterError):
    """The state disk is full: nothing new could be stored; what was stored before stays."""


class StoreBusyError(EdufilterError):
    """The policy database stayed locked by another writer for the whole busy timeout."""
