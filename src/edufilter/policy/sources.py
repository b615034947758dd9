"""Readers for category list files: UT1 folders and tarballs, hosts, plain and adblock lists.

Every reader streams its file in large blocks of whole lines and yields Entries batches
(normalised names, networks and URL prefixes); bad lines are counted in a BadLines and never
stop a read. A missing, unreadable or damaged (compressed) file raises PolicyError.

Names go through the fast path's normalise_name, so the list store holds exactly the names
the packet path extracts. A Unicode (IDN) name is converted to punycode with Python's `idna`
codec (IDNA 2003: the few characters where IDNA 2008 differs, such as ß, map the 2003 way).
"""

from __future__ import annotations

import gzip
import html
import ipaddress
import os
import re
import shutil
import socket
import tarfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from edufilter._fastpath import normalise_name
from edufilter.errors import PolicyError
from edufilter.policy.model import Category, check_id

BLOCK_BYTES = 4 << 20  # lines are parsed 4 MiB at a time: few Python calls, bounded memory
MAX_LIST_BYTES = 4 << 30  # one list file, uncompressed; UT1 adult is about 100 MB
BAD_LINES_KEPT = 20
_BAD_TEXT_CHARS = 120
_SNIFF_BYTES = 64 << 10
_RATIO_FREE_BYTES = 1 << 20  # a small file's compression ratio says nothing
_GZIP_MAGIC = b"\x1f\x8b"
_UTF8_BOM = b"\xef\xbb\xbf"

# Called with the number of bytes of the file on disk (compressed, for gzip) read since
# the previous call, so that a caller can show progress over several files.
OnRead = Callable[[int], None]


class ListFormat(StrEnum):
    AUTO = "auto"
    HOSTS = "hosts"  # "0.0.0.0 name [name ...]"
    PLAIN = "plain"  # one name (or address) per line, '#' comments
    ADBLOCK = "adblock"  # the DNS-blocking subset: "||name^"


@dataclass(frozen=True, slots=True)
class BadLine:
    path: str
    line_number: int
    text: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line_number}: {self.reason}: {self.text!r}"


@dataclass(slots=True)
class BadLines:
    """Counts every bad line (per reason) and keeps the first few to show."""

    keep: int = BAD_LINES_KEPT
    count: int = 0
    first: list[BadLine] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)

    def add(self, path: Path | str, line_number: int, raw: bytes, reason: str) -> None:
        self.count += 1
        self.reasons[reason] += 1
        if len(self.first) < self.keep:
            text = raw[:_BAD_TEXT_CHARS].decode("utf-8", "backslashreplace")
            self.first.append(BadLine(str(path), line_number, text, reason))


@dataclass(slots=True)
class Entries:
    """Normalised entries read from one block of a list file (duplicates possible)."""

    names: list[str] = field(default_factory=list)  # a name and all its subdomains
    cidrs: list[str] = field(default_factory=list)  # "192.0.2.1/32", "2001:db8::/32"
    urls: list[str] = field(default_factory=list)  # "host/path", no scheme


# ---------------------------------------------------------------- reading files


def read_line_blocks(
    paths: Path | Sequence[Path],
    block_bytes: int = BLOCK_BYTES,
    on_read: OnRead | None = None,
    max_bytes: int = MAX_LIST_BYTES,
    max_ratio: float | None = None,
) -> Iterator[tuple[Path, int, list[bytes]]]:
    """(file, number of the block's first line in it, lines) for each block of whole lines.

    Several paths are the parts of one file split by size (the mirror's `domains.0`,
    `domains.1`, ...): a line cut at the end of a part ends in the next one, and counts
    as that part's line 1. gzip is undone, a UTF-8 byte order mark dropped. More than
    max_bytes of lines, or (past the first MiB) more than max_ratio times the bytes read
    from disk, is refused: a compression bomb stops before it costs minutes.
    """
    parts = [paths] if isinstance(paths, Path) else list(paths)
    pending = b""
    read_bytes = 0
    for index, path in enumerate(parts):
        line_number = 1
        with _open_list(path) as (raw, stream):
            position = 0
            try:
                while block := stream.read(block_bytes):
                    if read_bytes == 0 and block.startswith(_UTF8_BOM):
                        block = block[len(_UTF8_BOM):]
                    read_bytes += len(block)
                    if read_bytes > max_bytes:
                        raise PolicyError(f"{path}: more than {max_bytes >> 20} MiB of list data")
                    if max_ratio is not None and read_bytes > _RATIO_FREE_BYTES and read_bytes > max_ratio * raw.tell():
                        raise PolicyError(f"{path}: inflates more than {max_ratio:g} times; not a list file "
                                          "(a compression bomb?)")
                    if on_read is not None:
                        on_read(raw.tell() - position)
                        position = raw.tell()
                    block = pending + block
                    cut = block.rfind(b"\n") + 1
                    if cut == 0 and len(block) < block_bytes:
                        pending = block
                        continue
                    if cut == 0:  # no newline in a whole block: garbage, split it anywhere
                        cut = len(block)
                    pending = block[cut:]
                    lines = block[:cut].splitlines()
                    yield path, line_number, lines
                    line_number += len(lines)
            except (OSError, EOFError, zlib.error) as error:
                raise PolicyError(f"{path}: cannot read (damaged or cut short?): {error}") from error
        if index == len(parts) - 1 and pending:
            yield path, line_number, pending.splitlines()


@contextmanager
def _open_list(path: Path) -> Iterator[tuple[BinaryIO, BinaryIO]]:
    """The file on disk and the stream of its lines' bytes (gzip undone)."""
    try:
        raw = open(path, "rb")
    except OSError as error:
        raise PolicyError(f"{path}: cannot read: {error.strerror or error}") from error
    with raw:
        try:
            compressed = raw.read(2) == _GZIP_MAGIC
            raw.seek(0)
        except OSError as error:
            raise PolicyError(f"{path}: cannot read: {error.strerror or error}") from error
        yield raw, gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw


def sniff_format(path: Path) -> ListFormat:
    """The most likely format of a list file, judged on its first 64 KiB."""
    with _open_list(path) as (_, stream):
        try:
            head = stream.read(_SNIFF_BYTES)
        except (OSError, EOFError, zlib.error) as error:
            raise PolicyError(f"{path}: cannot read (damaged or cut short?): {error}") from error
    votes: Counter[ListFormat] = Counter()
    for line in head.splitlines()[:2000]:
        line = line.strip()
        if line[:9].lower() == b"[adblock ":
            return ListFormat.ADBLOCK
        if not line or line.startswith(b"#"):
            continue
        if line.startswith((b"||", b"@@", b"!")):
            votes[ListFormat.ADBLOCK] += 1
        elif _HOSTS_LINE.match(line):
            votes[ListFormat.HOSTS] += 1
        else:
            votes[ListFormat.PLAIN] += 1
    best = max(votes.values(), default=0)
    for fmt in (ListFormat.PLAIN, ListFormat.HOSTS, ListFormat.ADBLOCK):  # ties go to plain
        if votes[fmt] == best:
            return fmt
    return ListFormat.PLAIN


_HOSTS_LINE = re.compile(rb"(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9a-fA-F]*:[0-9a-fA-F:.]*)[ \t]+[^ \t#]")


def read_list(
    path: Path | Sequence[Path], fmt: ListFormat | str, bad: BadLines, on_read: OnRead | None = None,
    max_bytes: int = MAX_LIST_BYTES, max_ratio: float | None = None,
) -> Iterator[Entries]:
    """Entries of a hosts, plain or adblock file, or of the parts of one (sniffed when fmt is
    auto); max_bytes and max_ratio bound the data inflated, as read_line_blocks says."""
    try:
        fmt = ListFormat(fmt)
    except ValueError:
        raise PolicyError(f"unknown list format {fmt!r}: use one of {', '.join(ListFormat)}") from None
    if fmt is ListFormat.AUTO:
        if not isinstance(path, Path):
            raise PolicyError("the format of a file in parts must be given")
        fmt = sniff_format(path)
    parse_block = {
        ListFormat.PLAIN: _parse_plain_block,
        ListFormat.HOSTS: _parse_hosts_block,
        ListFormat.ADBLOCK: _parse_adblock_block,
    }[fmt]
    for part, first_line, lines in read_line_blocks(path, on_read=on_read, max_bytes=max_bytes, max_ratio=max_ratio):
        entries = Entries()
        parse_block(part, first_line, lines, bad, entries)
        yield entries


_URL_SPACE_OR_CONTROL = re.compile(rb"[\x00-\x20\x7f]")


def read_urls(path: Path, bad: BadLines, on_read: OnRead | None = None) -> Iterator[Entries]:
    """Entries of a UT1 `urls` file: host/path per line, no scheme."""
    for part, first_line, lines in read_line_blocks(path, on_read=on_read):
        entries = Entries()
        for offset, line in enumerate(lines):
            text = line.strip()
            if not text or text.startswith(b"#"):
                continue
            lowered = text[:8].lower()
            for scheme in (b"http://", b"https://"):
                if lowered.startswith(scheme):
                    text = text[len(scheme):]
            host, _, url_path = text.partition(b"/")
            kind, value = _classify(host)
            if kind is None:
                bad.add(part, first_line + offset, line, f"URL host: {value}")
                continue
            if _URL_SPACE_OR_CONTROL.search(url_path):  # never in a real URL; would break the line format
                bad.add(part, first_line + offset, line, "space or control character in URL path")
                continue
            try:
                path_text = url_path.decode("utf-8")
            except UnicodeDecodeError:
                bad.add(part, first_line + offset, line, "URL path is not UTF-8")
                continue
            host_text = value if kind == "name" else _address_host(value)
            entries.urls.append(f"{host_text}/{path_text}")
        yield entries


def _address_host(network: str) -> str:
    """The URL host form of a single-address network: 192.0.2.1 or [2001:db8::1]."""
    address = network.split("/")[0]
    return f"[{address}]" if ":" in address else address


# ---------------------------------------------------------------- line parsers


def _parse_plain_block(path: Path, first_line: int, lines: list[bytes], bad: BadLines, out: Entries) -> None:
    # Nearly every line of a real list is already a clean name: normalise all of them in
    # one C-level map and look closer only at the lines that failed.
    results = list(map(normalise_name, lines))
    out.names.extend(filter(None, results))
    if None not in results:
        return
    for index in [i for i, name in enumerate(results) if name is None]:
        line = lines[index]
        text = line.split(b"#", 1)[0].strip()
        if not text:
            continue
        if len(text.split()) > 1:
            bad.add(path, first_line + index, line, "more than one field")
            continue
        _add_token(text, path, first_line + index, line, bad, out)


_HOSTS_IGNORED = frozenset(
    (
        b"localhost", b"localhost.localdomain", b"local", b"broadcasthost", b"ip6-localhost",
        b"ip6-loopback", b"ip6-localnet", b"ip6-mcastprefix", b"ip6-allnodes", b"ip6-allrouters",
        b"ip6-allhosts", b"0.0.0.0",
    )
)


def _parse_hosts_block(path: Path, first_line: int, lines: list[bytes], bad: BadLines, out: Entries) -> None:
    is_address: dict[bytes, bool] = {}  # nearly every line starts with the same sink address
    for offset, line in enumerate(lines):
        fields = line.split(b"#", 1)[0].split()
        if not fields:
            continue
        address_first = is_address.get(fields[0])
        if address_first is None:
            address_first = is_address[fields[0]] = _classify(fields[0])[0] == "cidr"
        if len(fields) == 1 and not address_first:  # hosts lists often mix in bare names
            _add_token(fields[0], path, first_line + offset, line, bad, out)
            continue
        if len(fields) == 1:
            bad.add(path, first_line + offset, line, "address without a name")
            continue
        if not address_first:
            bad.add(path, first_line + offset, line, "first field is not an IP address")
            continue
        for host in fields[1:]:
            if host.lower() in _HOSTS_IGNORED:
                continue
            name = normalise_name(host)
            if name is not None:
                out.names.append(name)
            else:
                _add_token(host, path, first_line + offset, line, bad, out)


_ADBLOCK_OPTIONS = frozenset((b"important", b"all"))  # both keep "block this name" meaning


def _parse_adblock_block(path: Path, first_line: int, lines: list[bytes], bad: BadLines, out: Entries) -> None:
    for offset, line in enumerate(lines):
        text = line.strip()
        if text.startswith(b"||") and text.endswith(b"^"):
            name = normalise_name(text[2:-1])
            if name is not None:
                out.names.append(name)
                continue
        if not text or text.startswith(b"!") or text[:9].lower() == b"[adblock ":
            continue
        problem = _adblock_problem(text)
        if problem:
            bad.add(path, first_line + offset, line, f"unsupported adblock rule: {problem}")
            continue
        body = text[2:].partition(b"$")[0]
        _add_token(body[:-2] if body.endswith(b"^|") else body[:-1], path, first_line + offset, line, bad, out)


def _adblock_problem(text: bytes) -> str | None:
    """Why an adblock line is outside the '||name^' subset, or None when it is inside."""
    if text.startswith(b"@@"):
        return "exception (@@)"
    if any(marker in text for marker in (b"##", b"#@#", b"#?#", b"#$#", b"#%#")):
        return "cosmetic filter"
    if not text.startswith(b"||"):
        return "not anchored with ||"
    body, dollar, options = text[2:].partition(b"$")
    if dollar:
        unknown = [option for option in options.split(b",") if option.strip().lower() not in _ADBLOCK_OPTIONS]
        if unknown:
            return "option $" + b",".join(unknown).decode("utf-8", "backslashreplace")
    if b"/" in body:
        return "path"
    if b"*" in body:
        return "wildcard"
    if not (body.endswith(b"^") or body.endswith(b"^|")):
        return "no ^ separator"
    return None


def _add_token(token: bytes, path: Path, line_number: int, line: bytes, bad: BadLines, out: Entries) -> None:
    # "*.example.org" and ".example.org" (squidGuard style) mean the domain with its
    # subdomains, which is what a domain entry matches anyway.
    if token.startswith(b"*."):
        token = token[2:]
    elif token.startswith(b".") and len(token) > 1 and token[1:2] != b".":
        token = token[1:]
    kind, value = _classify(token)
    if kind == "name":
        out.names.append(value)
    elif kind == "cidr":
        out.cidrs.append(value)
    else:
        bad.add(path, line_number, line, value)


def _classify(token: bytes) -> tuple[str | None, str]:
    """("name", name), ("cidr", network) or (None, why it is neither)."""
    name = normalise_name(token) if token else None
    if name is not None:
        return "name", name
    if not token:
        return None, "empty"
    if token.isascii() and (b":" in token or token[-1:].isdigit()):
        text = token.decode("ascii")
        try:  # a bare IPv4 address, most common by far: ten times faster than ipaddress
            return "cidr", socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, text)) + "/32"
        except OSError:
            pass
        try:
            return "cidr", str(ipaddress.ip_network(text, strict=False))
        except ValueError:
            pass
    if b"\0" in token:
        return None, "NUL byte (binary or UTF-16 file?)"
    if not token.isascii():
        try:
            unicode_name = token.decode("utf-8")
        except UnicodeDecodeError:
            return None, "not UTF-8"
        try:
            name = normalise_name(unicode_name.encode("idna"))
        except UnicodeError:
            return None, "not a valid internationalised name"
        if name is not None:
            return "name", name
    return None, "not a valid host name or IP address"


# ---------------------------------------------------------------- UT1


UT1_IGNORED_FILES = ("expressions", "very_restrictive_expression")  # regexes over URLs
_UT1_DOMAINS = re.compile(r"domains(?:\.(\d+))?(\.gz)?")
_UT1_FILES = re.compile(r"domains(?:\.\d+)?(?:\.gz)?|urls(?:\.gz)?|usage|" + "|".join(UT1_IGNORED_FILES))
_ALIAS_FILE_BYTES = 64


@dataclass(frozen=True, slots=True)
class Ut1Category:
    """One category folder of a UT1 tree, or an alias of one."""

    name: str
    folder: Path
    alias_of: str | None = None
    domain_files: tuple[Path, ...] = ()  # "domains", or the parts of one split file in order
    url_files: tuple[Path, ...] = ()
    usage: tuple[str, ...] = ()  # "black"/"white", then UT1's keywords for the category
    ignored_files: tuple[str, ...] = ()
    problem: str | None = None  # why the folder cannot be read (e.g. a part is missing)


def find_ut1_root(path: Path) -> Path:
    """The folder holding the category folders: path itself or its `blacklists/`."""
    if not path.is_dir():
        raise PolicyError(f"{path}: not a UT1 folder")
    nested = path / "blacklists"
    return nested if nested.is_dir() and not (path / "global_usage").exists() else path


def scan_ut1(root: Path) -> dict[str, Ut1Category]:
    """The categories (and aliases) under a UT1 root, by name."""
    try:
        children = sorted(root.iterdir())
    except OSError as error:
        raise PolicyError(f"{root}: cannot list: {error.strerror or error}") from error
    categories: dict[str, Ut1Category] = {}
    for child in children:
        if child.is_dir() and not child.is_symlink() and is_category_name(child.name):
            category = _scan_category(child)
            if category.domain_files or category.url_files or category.usage or category.ignored_files:
                categories[child.name] = category
    for child in children:
        if is_category_name(child.name) and child.name not in categories:
            target = _alias_target(child, root)
            if target in categories:
                categories[child.name] = Ut1Category(child.name, child, alias_of=target)
    return dict(sorted(categories.items()))


def is_category_name(name: str) -> bool:
    """Whether name is a valid category name (and so a UT1 folder to look at)."""
    try:
        check_id("category", name)
    except PolicyError:
        return False
    return True


def _alias_target(entry: Path, root: Path) -> str | None:
    """The sibling a symlink points to, or the name in the tiny text file that a checkout
    writes in place of a symlink (the mirror snapshot stores `porn` holding 'adult')."""
    try:
        if entry.is_symlink():
            target = entry.resolve()
            return target.name if target.parent == root.resolve() and target.is_dir() else None
        if entry.is_file() and entry.stat().st_size <= _ALIAS_FILE_BYTES:
            text = entry.read_bytes().strip().decode("ascii", "replace")
            return text if is_category_name(text) and (root / text).is_dir() else None
    except (OSError, RuntimeError):  # unreadable, or a symlink loop
        return None
    return None


def _scan_category(folder: Path) -> Ut1Category:
    whole: list[Path] = []
    parts: dict[int, Path] = {}
    url_files: list[Path] = []
    ignored: list[str] = []
    usage: tuple[str, ...] = ()
    try:
        entries = sorted(folder.iterdir())
    except OSError as error:
        raise PolicyError(f"{folder}: cannot list: {error.strerror or error}") from error
    for entry in entries:
        match = _UT1_DOMAINS.fullmatch(entry.name)
        if match and match.group(1) is None:
            whole.append(entry)
        elif match:
            parts[int(match.group(1))] = entry
        elif entry.name in ("urls", "urls.gz"):
            url_files.append(entry)
        elif entry.name == "usage":
            usage = read_ut1_usage(entry)
        elif entry.name in UT1_IGNORED_FILES:
            ignored.append(entry.name)
    problem = None
    # The mirror splits a large `domains` by size (`split -b`/`-C`), then may gzip each part:
    # the parts only make sense joined in order, and a missing one loses a whole range.
    if whole:
        domain_files = (whole[0],)
    else:
        domain_files = tuple(parts[number] for number in sorted(parts))
        missing = sorted(set(range(max(parts, default=-1) + 1)) - set(parts))
        if missing:
            present = ", ".join(map(str, sorted(parts)))
            problem = f"{folder.name}: domains part {missing[0]} is missing (parts {present})"
    return Ut1Category(folder.name, folder, None, domain_files, tuple(url_files), usage, tuple(ignored), problem)


def read_ut1_usage(path: Path) -> tuple[str, ...]:
    """The words of a `usage` file: black/white first, then keywords; comments dropped."""
    try:
        text = path.read_bytes().decode("utf-8", "replace")
    except OSError as error:
        raise PolicyError(f"{path}: cannot read: {error.strerror or error}") from error
    words = (line.strip() for line in text.splitlines())
    return tuple(word for word in words if word and not word.startswith("#"))


def read_ut1_category(category: Ut1Category, bad: BadLines, on_read: OnRead | None = None) -> Iterator[Entries]:
    """Entries of a category folder: its domains file (or its parts), then its urls file."""
    if category.problem:
        raise PolicyError(category.problem)
    if category.domain_files:
        yield from read_list(category.domain_files, ListFormat.PLAIN, bad, on_read)
    for path in category.url_files:
        yield from read_urls(path, bad, on_read)


_CATALOGUE_LINE = re.compile(r"(NAME|DESC)(?:[ \t]+([A-Za-z]{2}))?[ \t]*:[ \t]*(.*)")


def read_ut1_catalogue(path: Path, source: str = "ut1") -> dict[str, Category]:
    """Categories described in UT1's `global_usage`: titles and descriptions per language.

    Records start with `NAME:<tab or spaces>category` and hold `NAME xx:` (title) and
    `DESC xx:` (description) lines for language xx; '#' lines are comments. The file is
    UTF-8 (older releases were Latin-1) and a few titles carry HTML entities.
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise PolicyError(f"{path}: cannot read: {error.strerror or error}") from error
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    records: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
    current: tuple[dict[str, str], dict[str, str]] | None = None
    for line in text.splitlines():
        match = _CATALOGUE_LINE.match(line)
        if not match or line.startswith("#"):
            continue
        key, language, value = match.group(1), match.group(2), html.unescape(match.group(3).strip())
        if key == "NAME" and language is None:
            current = records.setdefault(value, ({}, {})) if is_category_name(value) else None
        elif current is not None and language and value:
            current[0 if key == "NAME" else 1][language.lower()] = value
    return {
        name: Category(name=name, source=source, titles=titles, descriptions=descriptions)
        for name, (titles, descriptions) in sorted(records.items())
    }


# ---------------------------------------------------------------- UT1 archives


MAX_EXTRACTED_BYTES = 4 << 30  # upstream unpacks to a few hundred MB; beyond this it is not UT1
MAX_ARCHIVE_MEMBERS = 100_000  # upstream has a few hundred; tarfile keeps every header in memory
_SKIPPED_KEPT = 20


def extract_ut1_archive(archive: Path, destination: Path, max_bytes: int = MAX_EXTRACTED_BYTES) -> list[str]:
    """Unpack the UT1 parts of a tarball into destination; returns (the first) members skipped.

    Accepts the whole `blacklists.tar.gz` (top folder `blacklists/`) and single-category
    archives (`adult/domains`, ...). Only category files, `global_usage` and alias symlinks
    to a sibling category are written, never through a symlink, so a hostile archive cannot
    place anything else. A damaged, truncated or oversized archive raises PolicyError.
    """
    if not archive.is_file():
        raise PolicyError(f"{archive}: no such file")
    skipped: list[str] = []
    unpacked = 0
    destination.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            for count, member in enumerate(tar, 1):
                if count > MAX_ARCHIVE_MEMBERS:
                    raise PolicyError(f"{archive}: more than {MAX_ARCHIVE_MEMBERS} members; not a UT1 archive")
                unpacked += max(member.size, 0)  # skipped members are decompressed too
                if unpacked > max_bytes:
                    raise PolicyError(f"{archive}: unpacks to more than {max_bytes >> 20} MiB")
                parts = [part for part in PurePosixPath(member.name).parts if part != "."]
                if parts and parts[0] == "blacklists":
                    parts = parts[1:]
                if member.isdir() or not parts:
                    continue
                target = _archive_target(member, parts)
                path = destination.joinpath(*target) if target else destination
                if target is None or os.path.lexists(path) or path.parent.is_symlink():
                    if len(skipped) < _SKIPPED_KEPT:
                        skipped.append(member.name)
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                if member.issym():
                    os.symlink(member.linkname.rstrip("/"), path)
                    continue
                source = tar.extractfile(member)
                assert source is not None  # regular files always have data
                with source, open(path, "xb") as copy:
                    shutil.copyfileobj(source, copy, 1 << 20)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise PolicyError(f"{archive}: cannot unpack (damaged or incomplete archive?): {error}") from error
    return skipped


def _archive_target(member: tarfile.TarInfo, parts: list[str]) -> list[str] | None:
    if len(parts) == 1 and parts[0] == "global_usage" and member.isfile():
        return parts
    if len(parts) == 1 and member.issym() and is_category_name(parts[0]):
        return parts if is_category_name(member.linkname.rstrip("/")) else None
    if len(parts) == 2 and member.isfile() and is_category_name(parts[0]) and _UT1_FILES.fullmatch(parts[1]):
        return parts
    return None
