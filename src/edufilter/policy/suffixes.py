"""Public suffixes (com, co.uk, github.io, ...): names under which unrelated parties register
their own sites, from the Public Suffix List. An override or list entry for one would cover
every site under it, so the policy refuses them (see refuse_public_suffix).

The list is Debian's `publicsuffix` package (kept current by apt), read by the
`publicsuffixlist` library; without the Debian file, the copy the library ships is used. A
changed file (an apt upgrade) is read again within RECHECK_SECONDS, without a restart.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from publicsuffixlist import PublicSuffixList

from edufilter.errors import PolicyError

DEBIAN_LIST = Path("/usr/share/publicsuffix/public_suffix_list.dat")
RECHECK_SECONDS = 60.0


class Scope(StrEnum):
    """Which of the list's sections a name is refused for."""

    ICANN = "icann"  # top-level and registry suffixes: com, co.uk, kawasaki.jp
    ANY = "any"  # also the private section: hosting platforms such as github.io, blogspot.com


@dataclass(frozen=True, slots=True)
class _Loaded:
    icann: PublicSuffixList
    every: PublicSuffixList
    source: str
    mtime: float | None  # of the Debian file; None: the library's own copy


class _Lists:
    """The two views of the list, loaded once and again when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._loaded: _Loaded | None = None
        self._checked_at = 0.0

    def get(self) -> _Loaded:
        now = time.monotonic()
        loaded = self._loaded
        if loaded is not None and now - self._checked_at < RECHECK_SECONDS:
            return loaded
        with self._lock:
            self._checked_at = now
            mtime = self._mtime()
            if self._loaded is None or self._loaded.mtime != mtime:
                self._loaded = self._load(mtime)
            return self._loaded

    def _mtime(self) -> float | None:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return None

    def _load(self, mtime: float | None) -> _Loaded:
        if mtime is None:
            return _Loaded(PublicSuffixList(only_icann=True), PublicSuffixList(), "the publicsuffixlist library", None)
        text = self.path.read_bytes()
        return _Loaded(
            PublicSuffixList(text.splitlines(), only_icann=True), PublicSuffixList(text.splitlines()),
            str(self.path), mtime,
        )


_LISTS = _Lists(DEBIAN_LIST)


def list_source() -> str:
    """Where the Public Suffix List in use was read from."""
    return _LISTS.get().source


def public_suffix_section(name: str) -> Scope | None:
    """ICANN when `name` (normalised, lowercase) is a suffix of the list's ICANN section, ANY
    when only of its private section, None when it is a name one party registers.

    A name the list does not know ends in an unknown top-level domain: its last label alone is
    the suffix (the list's default rule), so `localhost` or a lone `xn--` label is one."""
    lists = _LISTS.get()
    if lists.icann.is_public(name):
        return Scope.ICANN
    if lists.every.is_public(name):
        return Scope.ANY
    return None


def refuse_public_suffix(name: str, what: str, scope: Scope) -> None:
    """PolicyError, naming `what` and why, when `name` is a public suffix within `scope`, or
    has a label that starts with xn-- but is not valid punycode."""
    for label in name.split("."):
        if label.startswith("xn--") and not _is_punycode(label[4:]):
            raise PolicyError(f"{what} {name!r}: label {label!r} is not a valid internationalised name")
    section = public_suffix_section(name)
    if section is None or (section is Scope.ANY and scope is Scope.ICANN):
        return
    if section is Scope.ICANN:
        why = "a public suffix (a top-level or registry domain) under which anyone registers sites"
    else:
        why = "a public suffix (a platform under which unrelated people publish their own sites)"
    raise PolicyError(
        f"{what} {name!r} is {why}: it would cover every site under it; "
        f"name one site instead, e.g. example.{name}"
    )


def _is_punycode(encoded: str) -> bool:
    """Whether an xn-- label's rest decodes to non-ASCII text that encodes back to it."""
    try:
        decoded = encoded.encode("ascii").decode("punycode")
    except UnicodeError:
        return False
    return not decoded.isascii() and decoded.encode("punycode").decode("ascii") == encoded
