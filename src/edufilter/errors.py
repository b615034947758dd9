"""One error tree: every failure a user should read ends up as an EdufilterError."""


class EdufilterError(Exception):
    """Base of the errors edufilter reports to people (CLI message, API problem)."""


class CaptureFileError(EdufilterError):
    """A capture file that cannot be read: unknown format, bad header, cut short."""


class PolicyError(EdufilterError):
    """A policy object, list file or image that is invalid; the message names the field."""


class NetfilterError(EdufilterError):
    """edufilter's netfilter rules or conntrack marks could not be read or changed."""


class QueueError(EdufilterError):
    """An NFQUEUE queue that cannot be bound or used; the message names the queue and errno."""


class StorageFullError(EdufilterError):
    """The state disk is full: nothing new could be stored; what was stored before stays."""


class StoreBusyError(EdufilterError):
    """The policy database stayed locked by another writer for the whole busy timeout."""
