"""DNS answers the gateway forges or rewrites: blocked names, safe search and bypass signals.

Every function takes a whole IP packet as NFQUEUE hands it over (IPv4 or IPv6, UDP) and returns
a whole IP packet, or None when its input is not what it must be; nothing here raises on packet
input. Messages are parsed into sections and serialised again, never patched in place.

Names travel between these functions as presentation-format text (RFC 1035 section 5.1: labels
joined by dots, a dot or backslash inside a label escaped with a backslash, other bytes outside
printable ASCII as \\DDD), with their case kept: a client that randomises the case of its
question (DNS 0x20) gets its question back exactly.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Final, Literal

from edufilter.enforce.inject import (
    IPPROTO_UDP,
    IPPacket,
    ip_packet,
    parse_ip,
    replace_transport,
    udp_segment,
)

BlockMode = Literal["nxdomain", "sinkhole"]
YoutubeMode = Literal["strict", "moderate"]

TYPE_A: Final = 1
TYPE_NS: Final = 2
TYPE_CNAME: Final = 5
TYPE_SOA: Final = 6
TYPE_PTR: Final = 12
TYPE_MX: Final = 15
TYPE_AAAA: Final = 28
TYPE_SRV: Final = 33
TYPE_OPT: Final = 41
TYPE_ANY: Final = 255
CLASS_IN: Final = 1
CLASS_ANY: Final = 255

RCODE_NOERROR: Final = 0
RCODE_NXDOMAIN: Final = 3
RCODE_BADVERS: Final = 16  # an extended RCODE: its upper 8 bits travel in the OPT record

FLAG_QR: Final = 0x8000
FLAG_TC: Final = 0x0200
FLAG_RD: Final = 0x0100
FLAG_RA: Final = 0x0080
FLAG_AD: Final = 0x0020
FLAG_CD: Final = 0x0010
_OPCODE_MASK: Final = 0x7800  # opcode 0 is QUERY
_RCODE_MASK: Final = 0x000F
_EDNS_DO: Final = 0x8000  # in the OPT record's TTL field

# What we advertise in our OPT record, and the size a rewritten answer may grow to when the
# resolver's was smaller: the DNS flag day 2020 default, safe from fragmentation on any path.
EDNS_UDP_PAYLOAD: Final = 1232
_CLASSIC_UDP_LIMIT: Final = 512  # RFC 1035 section 4.2.1, for clients without EDNS

# RFC 8914 Extended DNS Error option, INFO-CODE 15 "Blocked" (by the operator's policy).
_EDE_OPTION: Final = 15
_EDE_BLOCKED: Final = 15

# The SOA of our negative answers (RFC 2308): a name under .invalid (RFC 6761) that no one owns.
_SOA_MNAME: Final = (b"edufilter", b"invalid")
_SOA_RNAME: Final = (b"hostmaster", b"edufilter", b"invalid")
_SOA_TIMERS: Final = (1, 3600, 600, 86400)  # serial, refresh, retry, expire
DEFAULT_CNAME_TTL: Final = 60  # for a safe-search CNAME when the answer has no record to copy

_MAX_NAME_WIRE: Final = 255
_MAX_LABEL: Final = 63
_MAX_COMPRESSION_OFFSET: Final = 0x3FFF

Name = tuple[bytes, ...]  # labels, without the root label
RdataPart = bytes | Name

# RDATA layouts with domain names in them: a name, or a number of opaque bytes. Names in the
# RFC 1035 types may be compressed and are compressed again when written; the later types may
# only carry compressed names from old software (RFC 3597 section 4) and are written plain.
_NAME_FIELD: Final = 0
_RDATA_LAYOUTS: Final[dict[int, tuple[int, ...]]] = {
    TYPE_NS: (_NAME_FIELD,),
    3: (_NAME_FIELD,),  # MD
    4: (_NAME_FIELD,),  # MF
    TYPE_CNAME: (_NAME_FIELD,),
    TYPE_SOA: (_NAME_FIELD, _NAME_FIELD, 20),
    7: (_NAME_FIELD,),  # MB
    8: (_NAME_FIELD,),  # MG
    9: (_NAME_FIELD,),  # MR
    TYPE_PTR: (_NAME_FIELD,),
    14: (_NAME_FIELD, _NAME_FIELD),  # MINFO
    TYPE_MX: (2, _NAME_FIELD),
    17: (_NAME_FIELD, _NAME_FIELD),  # RP
    18: (2, _NAME_FIELD),  # AFSDB
    21: (2, _NAME_FIELD),  # RT
    26: (2, _NAME_FIELD, _NAME_FIELD),  # PX
    TYPE_SRV: (6, _NAME_FIELD),
}
_COMPRESSIBLE_TYPES: Final = frozenset(
    {TYPE_NS, 3, 4, TYPE_CNAME, TYPE_SOA, 7, 8, 9, TYPE_PTR, 14, TYPE_MX}
)

# --- safe search and bypass signals ---------------------------------------------------------

# Google: "Block adult content at your school with SafeSearch", option 3 (router/DNS): map each
# Google search domain to forcesafesearch.google.com with a CNAME.
#   https://support.google.com/websearch/answer/186669
# The search domains are Google's own list, https://www.google.com/supported_domains
_GOOGLE_SAFE_SEARCH: Final = "forcesafesearch.google.com"
_GOOGLE_SEARCH_DOMAINS: Final = """
    google.com google.ad google.ae google.com.af google.com.ag google.al google.am google.co.ao
    google.com.ar google.as google.at google.com.au google.az google.ba google.com.bd google.be
    google.bf google.bg google.com.bh google.bi google.bj google.com.bn google.com.bo
    google.com.br google.bs google.bt google.co.bw google.by google.com.bz google.ca google.cd
    google.cf google.cg google.ch google.ci google.co.ck google.cl google.cm google.cn
    google.com.co google.co.cr google.com.cu google.cv google.com.cy google.cz google.de
    google.dj google.dk google.dm google.com.do google.dz google.com.ec google.ee google.com.eg
    google.es google.com.et google.fi google.com.fj google.fm google.fr google.ga google.ge
    google.gg google.com.gh google.com.gi google.gl google.gm google.gr google.com.gt google.gy
    google.com.hk google.hn google.hr google.ht google.hu google.co.id google.ie google.co.il
    google.im google.co.in google.iq google.is google.it google.je google.com.jm google.jo
    google.co.jp google.co.ke google.com.kh google.ki google.kg google.co.kr google.com.kw
    google.kz google.la google.com.lb google.li google.lk google.co.ls google.lt google.lu
    google.lv google.com.ly google.co.ma google.md google.me google.mg google.mk google.ml
    google.com.mm google.mn google.com.mt google.mu google.mv google.mw google.com.mx
    google.com.my google.co.mz google.com.na google.com.ng google.com.ni google.ne google.nl
    google.no google.com.np google.nr google.nu google.co.nz google.com.om google.com.pa
    google.com.pe google.com.pg google.com.ph google.com.pk google.pl google.pn google.com.pr
    google.ps google.pt google.com.py google.com.qa google.ro google.ru google.rw google.com.sa
    google.com.sb google.sc google.se google.com.sg google.sh google.si google.sk google.com.sl
    google.sn google.so google.sm google.sr google.st google.com.sv google.td google.tg
    google.co.th google.com.tj google.tl google.tm google.tn google.to google.com.tr google.tt
    google.com.tw google.co.tz google.com.ua google.co.ug google.co.uk google.com.uy
    google.co.uz google.com.vc google.co.ve google.co.vi google.com.vn google.vu google.ws
    google.rs google.co.za google.co.zm google.co.zw google.cat
""".split()

# YouTube: "Restrict YouTube content on your network or managed devices", method 1 (DNS):
# a CNAME from these five names to restrict.youtube.com (Strict Restricted Mode) or
# restrictmoderate.youtube.com (Moderate Restricted Mode).
#   https://support.google.com/a/answer/6214622
YOUTUBE_TARGETS: Final[dict[str, str]] = {
    "strict": "restrict.youtube.com",
    "moderate": "restrictmoderate.youtube.com",
}
_YOUTUBE_NAMES: Final = frozenset(
    {
        "www.youtube.com",
        "m.youtube.com",
        "youtubei.googleapis.com",
        "youtube.googleapis.com",
        "www.youtube-nocookie.com",
    }
)

_SAFE_SEARCH_TARGETS: Final[dict[str, str]] = {
    **{name: _GOOGLE_SAFE_SEARCH for domain in _GOOGLE_SEARCH_DOMAINS for name in
       (domain, f"www.{domain}")},
    # Bing: Microsoft's support article "Block adult content with SafeSearch or block Chat"
    # (support.microsoft.com, for schools and networks) maps www.bing.com to strict.bing.com
    # to lock SafeSearch to Strict. Its text was not at hand when this was written; Cisco
    # Umbrella's and CleanBrowsing's SafeSearch documentation describe the same CNAME.
    "www.bing.com": "strict.bing.com",
    # DuckDuckGo: "Searches from safe.duckduckgo.com always have safe search enabled."
    #   https://duck.co/help/features/safe-search
    "duckduckgo.com": "safe.duckduckgo.com",
    "www.duckduckgo.com": "safe.duckduckgo.com",
    "start.duckduckgo.com": "safe.duckduckgo.com",
}  # fmt: skip

# Names whose negative answer makes a bypass step aside:
# - Firefox turns default-on DNS over HTTPS off when its canary domain gets NXDOMAIN (or
#   NOERROR without A/AAAA):
#   https://support.mozilla.org/en-US/kb/canary-domain-use-application-dnsnet
# - Apple devices turn iCloud Private Relay off on a network whose resolver answers
#   mask.icloud.com and mask-h2.icloud.com with NXDOMAIN or "no error no answer"
#   ("Allow for network traffic audits"):
#   https://developer.apple.com/support/prepare-your-network-for-icloud-private-relay/
_BYPASS_NXDOMAIN: Final = frozenset(
    {"use-application-dns.net", "mask.icloud.com", "mask-h2.icloud.com"}
)


def safe_search_target(name: str, youtube_mode: YoutubeMode = "strict") -> str | None:
    """The provider's safe-search name that `name` is rewritten to, or None.

    Raises ValueError for a youtube_mode other than "strict" and "moderate".
    """
    if youtube_mode not in YOUTUBE_TARGETS:
        raise ValueError(f"youtube_mode must be one of {sorted(YOUTUBE_TARGETS)}")
    key = _lookup_key(name)
    if key in _YOUTUBE_NAMES:
        return YOUTUBE_TARGETS[youtube_mode]
    return _SAFE_SEARCH_TARGETS.get(key)


def bypass_answer(name: str) -> Literal["nxdomain"] | None:
    """"nxdomain" for the documented opt-out names of Firefox DoH and iCloud Private Relay."""
    return "nxdomain" if _lookup_key(name) in _BYPASS_NXDOMAIN else None


def _lookup_key(name: str) -> str:
    # ASCII only: str.lower() would fold e.g. the Kelvin sign into "k" and match a lookalike.
    if not name.isascii():
        return ""
    return name.removesuffix(".").lower()


# --- the DNS message --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Question:
    name: Name
    qtype: int
    qclass: int


@dataclass(frozen=True, slots=True)
class Record:
    name: Name
    rtype: int
    rclass: int  # OPT: the sender's UDP payload size
    ttl: int  # OPT: extended RCODE, version, DO bit
    rdata: tuple[RdataPart, ...]  # opaque bytes and names, per _RDATA_LAYOUTS


@dataclass(frozen=True, slots=True)
class Message:
    id: int
    flags: int
    questions: tuple[Question, ...]
    answers: tuple[Record, ...]
    authority: tuple[Record, ...]
    additional: tuple[Record, ...]

    @property
    def opt(self) -> Record | None:
        return next((record for record in self.additional if record.rtype == TYPE_OPT), None)


class _Malformed(Exception):
    """Internal: the message cannot be parsed; the public functions turn it into None."""


def parse_message(data: bytes) -> Message | None:
    """Parse a DNS message with every name decompressed; None when it is malformed."""
    if len(data) < 12:
        return None
    message_id, flags, *counts = struct.unpack_from("!6H", data)
    question_count, *section_counts = counts
    try:
        offset = 12
        questions = []
        for _ in range(question_count):
            name, offset = _read_name(data, offset)
            if offset + 4 > len(data):
                raise _Malformed
            qtype, qclass = struct.unpack_from("!HH", data, offset)
            questions.append(Question(name, qtype, qclass))
            offset += 4
        sections = []
        for count in section_counts:
            records = []
            for _ in range(count):
                record, offset = _read_record(data, offset)
                records.append(record)
            sections.append(tuple(records))
    except _Malformed:
        return None
    answers, authority, additional = sections
    return Message(message_id, flags, tuple(questions), answers, authority, additional)


def _read_name(data: bytes, offset: int) -> tuple[Name, int]:
    """The name at offset, following compression pointers, and the offset just after it."""
    labels: list[bytes] = []
    wire_length = 1
    after: int | None = None
    position = offset
    while True:
        if position >= len(data):
            raise _Malformed
        length = data[position]
        if length & 0xC0 == 0xC0:
            if position + 1 >= len(data):
                raise _Malformed
            target = (length & 0x3F) << 8 | data[position + 1]
            if after is None:
                after = position + 2
            # Only backwards: with the name length bound below, every loop ends.
            if target >= position:
                raise _Malformed
            position = target
            continue
        if length & 0xC0:
            raise _Malformed  # RFC 6891 made the extended label types obsolete
        position += 1
        if length == 0:
            return tuple(labels), after if after is not None else position
        wire_length += length + 1
        if wire_length > _MAX_NAME_WIRE or position + length > len(data):
            raise _Malformed
        labels.append(data[position : position + length])
        position += length


def _read_record(data: bytes, offset: int) -> tuple[Record, int]:
    name, offset = _read_name(data, offset)
    if offset + 10 > len(data):
        raise _Malformed
    rtype, rclass, ttl, rdlength = struct.unpack_from("!HHIH", data, offset)
    start = offset + 10
    end = start + rdlength
    if end > len(data):
        raise _Malformed
    layout = _RDATA_LAYOUTS.get(rtype)
    if layout is None:
        return Record(name, rtype, rclass, ttl, (data[start:end],)), end
    parts: list[RdataPart] = []
    position = start
    for field in layout:
        if field == _NAME_FIELD:
            part, position = _read_name(data, position)
            parts.append(part)
        else:
            parts.append(data[position : position + field])
            position += field
        if position > end:
            raise _Malformed
    if position != end:
        raise _Malformed
    return Record(name, rtype, rclass, ttl, tuple(parts)), end


class _Writer:
    """Serialises a message, compressing names against the suffixes already written.

    Suffixes match byte for byte, not case-insensitively, so every name keeps its own case.
    """

    def __init__(self) -> None:
        self.buffer = bytearray()
        self._suffixes: dict[Name, int] = {}

    def name(self, labels: Name, compress: bool = True) -> None:
        for index, label in enumerate(labels):
            suffix = labels[index:]
            pointer = self._suffixes.get(suffix)
            if compress and pointer is not None:
                self.buffer += struct.pack("!H", 0xC000 | pointer)
                return
            if len(self.buffer) <= _MAX_COMPRESSION_OFFSET:
                self._suffixes.setdefault(suffix, len(self.buffer))
            self.buffer.append(len(label))
            self.buffer += label
        self.buffer.append(0)

    def record(self, record: Record) -> None:
        self.name(record.name)
        self.buffer += struct.pack("!HHI", record.rtype, record.rclass, record.ttl)
        length_at = len(self.buffer)
        self.buffer += b"\x00\x00"
        compress = record.rtype in _COMPRESSIBLE_TYPES
        for part in record.rdata:
            if isinstance(part, bytes):
                self.buffer += part
            else:
                self.name(part, compress)
        struct.pack_into("!H", self.buffer, length_at, len(self.buffer) - length_at - 2)


def serialise_message(message: Message) -> bytes:
    """The wire form of message (names compressed where RFC 3597 allows it)."""
    writer = _Writer()
    writer.buffer += struct.pack(
        "!6H", message.id, message.flags, len(message.questions), len(message.answers),
        len(message.authority), len(message.additional),
    )  # fmt: skip
    for question in message.questions:
        writer.name(question.name)
        writer.buffer += struct.pack("!HH", question.qtype, question.qclass)
    for section in (message.answers, message.authority, message.additional):
        for record in section:
            writer.record(record)
    return bytes(writer.buffer)


def name_to_text(name: Name) -> str:
    """Presentation format without the final dot ("." for the root)."""
    if not name:
        return "."
    return ".".join("".join(map(_escape_byte, label)) for label in name)


def _escape_byte(value: int) -> str:
    if value in (0x2E, 0x5C):  # "." and "\"
        return "\\" + chr(value)
    if 0x21 <= value <= 0x7E:
        return chr(value)
    return f"\\{value:03d}"


def text_to_name(text: str) -> Name | None:
    """Parse presentation format (a final dot is optional); None when it is not a valid name."""
    if text in ("", "."):
        return ()
    labels: list[bytes] = []
    label = bytearray()
    index = 0
    while index < len(text):
        char = text[index]
        if not char.isascii():
            return None
        if char == "\\":
            digits = text[index + 1 : index + 4]
            if len(digits) == 3 and all(c in "0123456789" for c in digits):
                if int(digits) > 255:
                    return None
                label.append(int(digits))
                index += 4
                continue
            if index + 1 >= len(text) or not text[index + 1].isascii():
                return None
            label.append(ord(text[index + 1]))
            index += 2
            continue
        if char == ".":
            if not label:
                return None
            labels.append(bytes(label))
            label = bytearray()
        else:
            label.append(ord(char))
        index += 1
    if label:
        labels.append(bytes(label))
    if any(len(part) > _MAX_LABEL for part in labels):
        return None
    if sum(len(part) + 1 for part in labels) + 1 > _MAX_NAME_WIRE:
        return None
    return tuple(labels)


# --- UDP datagrams carrying DNS -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Datagram:
    ip: IPPacket
    source_port: int
    destination_port: int
    payload: bytes
    message: Message


def _parse_datagram(packet: bytes) -> _Datagram | None:
    ip = parse_ip(packet)
    if ip is None or ip.protocol != IPPROTO_UDP or len(ip.transport) < 8:
        return None
    source_port, destination_port, length = struct.unpack_from("!HHH", ip.transport)
    if not 8 <= length <= len(ip.transport):
        return None
    payload = ip.transport[8:length]
    message = parse_message(payload)
    if message is None or not _edns_well_formed(message):
        return None
    return _Datagram(ip, source_port, destination_port, payload, message)


def _edns_well_formed(message: Message) -> bool:
    """At most one OPT record, owned by the root, in the additional section (RFC 6891 6.1.1)."""
    if any(r.rtype == TYPE_OPT for r in message.answers + message.authority):
        return False
    options = [record for record in message.additional if record.rtype == TYPE_OPT]
    return len(options) <= 1 and all(record.name == () for record in options)


def _parse_query(packet: bytes) -> _Datagram | None:
    """A standard query (opcode QUERY) with exactly one question."""
    datagram = _parse_datagram(packet)
    if datagram is None:
        return None
    message = datagram.message
    if message.flags & (FLAG_QR | _OPCODE_MASK) or len(message.questions) != 1:
        return None
    return datagram


def _carry(datagram: _Datagram, message: Message, reply: bool) -> bytes:
    """message in a packet: a new one back to the sender, or this one rewritten (IP header kept)."""
    ip = datagram.ip
    if reply:
        source, destination = ip.destination, ip.source
        ports = datagram.destination_port, datagram.source_port
    else:
        source, destination = ip.source, ip.destination
        ports = datagram.source_port, datagram.destination_port
    transport = udp_segment(ip.version, source, destination, *ports, serialise_message(message))
    if reply:
        return ip_packet(ip.version, source, destination, IPPROTO_UDP, transport)
    return replace_transport(ip, transport)


def query_name(query_packet: bytes) -> str | None:
    """The question name of a DNS query packet in presentation format, case kept; or None."""
    datagram = _parse_query(query_packet)
    if datagram is None:
        return None
    return name_to_text(datagram.message.questions[0].name)


# --- blocked names --------------------------------------------------------------------------


@lru_cache(maxsize=16)
def _address_bytes(address: str, version: int) -> bytes | None:
    if not address:
        return None
    parsed = ipaddress.ip_address(address)
    if parsed.version != version:
        raise ValueError(f"{address} is not an IPv{version} address")
    return parsed.packed


def blocked_answer(
    query_packet: bytes,
    mode: BlockMode,
    sinkhole_v4: str,
    sinkhole_v6: str,
    ttl: int = 60,
) -> bytes | None:
    """The answer to a blocked query, as a packet from the resolver to the client, or None.

    "nxdomain": NXDOMAIN for every query type, with an SOA of the parent zone in the authority
    section so the client caches it for `ttl` seconds (RFC 2308 section 5). "sinkhole": the
    block-page address for A (sinkhole_v4) and AAAA (sinkhole_v6; "" for none) and both for
    ANY; every other type (HTTPS, MX, TXT, ...) and an AAAA without a v6 address get NODATA
    (NOERROR, no answer, the SOA of the name itself), so the client falls back to A/AAAA.
    Queries with EDNS get an OPT with Extended DNS Error 15 "Blocked" (RFC 8914), or BADVERS
    for an EDNS version above 0 (RFC 6891). Raises ValueError only for a bad mode, address or
    ttl (configuration, not packet input).
    """
    if mode not in ("nxdomain", "sinkhole"):
        raise ValueError(f"unknown block mode {mode!r}")
    if not 0 <= ttl <= 0x7FFFFFFF:
        raise ValueError(f"ttl {ttl} outside 0..2**31-1")
    address4 = _address_bytes(sinkhole_v4, 4)
    address6 = _address_bytes(sinkhole_v6, 6)
    datagram = _parse_query(query_packet)
    if datagram is None:
        return None
    query = datagram.message
    question = query.questions[0]
    flags = FLAG_QR | FLAG_RA | (query.flags & (_OPCODE_MASK | FLAG_RD | FLAG_CD))
    query_opt = query.opt
    if query_opt is not None and (query_opt.ttl >> 16) & 0xFF != 0:
        badvers = _response_opt(query_opt, RCODE_BADVERS, b"")
        refusal = Message(query.id, flags, (question,), (), (), (badvers,))
        return _carry(datagram, refusal, reply=True)
    answers: tuple[Record, ...] = ()
    if mode == "sinkhole":
        answers = _sinkhole_records(question, address4, address6, ttl)
        rcode, soa_owner = RCODE_NOERROR, question.name
    else:
        rcode, soa_owner = RCODE_NXDOMAIN, question.name[1:]
    soa_class = CLASS_IN if question.qclass == CLASS_ANY else question.qclass
    authority = () if answers else (_negative_soa(soa_owner, soa_class, ttl),)
    blocked = struct.pack("!HHH", _EDE_OPTION, 2, _EDE_BLOCKED)
    additional = (_response_opt(query_opt, rcode, blocked),) if query_opt is not None else ()
    response = Message(query.id, flags | rcode, (question,), answers, authority, additional)
    return _carry(datagram, response, reply=True)


def _sinkhole_records(
    question: Question, address4: bytes | None, address6: bytes | None, ttl: int
) -> tuple[Record, ...]:
    if question.qclass not in (CLASS_IN, CLASS_ANY):
        return ()
    records = []
    if question.qtype in (TYPE_A, TYPE_ANY) and address4 is not None:
        records.append(Record(question.name, TYPE_A, CLASS_IN, ttl, (address4,)))
    if question.qtype in (TYPE_AAAA, TYPE_ANY) and address6 is not None:
        records.append(Record(question.name, TYPE_AAAA, CLASS_IN, ttl, (address6,)))
    return tuple(records)


def _negative_soa(owner: Name, rclass: int, ttl: int) -> Record:
    # The negative-caching time is the smaller of the SOA's TTL and its MINIMUM field.
    timers = struct.pack("!5I", *_SOA_TIMERS, ttl)
    return Record(owner, TYPE_SOA, rclass, ttl, (_SOA_MNAME, _SOA_RNAME, timers))


def _response_opt(query_opt: Record, rcode: int, options: bytes) -> Record:
    """Our OPT record: version 0, our payload size, the query's DO bit copied (RFC 3225)."""
    extended_rcode = rcode >> 4
    ttl = extended_rcode << 24 | (query_opt.ttl & _EDNS_DO)
    return Record((), TYPE_OPT, EDNS_UDP_PAYLOAD, ttl, (options,))


# --- safe search ------------------------------------------------------------------------------


def rewrite_query(query_packet: bytes, target: str) -> bytes | None:
    """The same query packet asking for target instead; None when it is not a parsable query."""
    datagram = _parse_query(query_packet)
    target_name = text_to_name(target)
    if datagram is None or not target_name:
        return None
    query = datagram.message
    question = replace(query.questions[0], name=target_name)
    return _carry(datagram, replace(query, questions=(question,)), reply=False)


def restore_answer(response_packet: bytes, original_name: str) -> bytes | None:
    """The resolver's answer for a safe-search name turned into one for original_name.

    The question is original_name again, a CNAME original_name -> safe name leads the answer
    (for NOERROR and NXDOMAIN, whose RCODE then speaks of the end of the chain, RFC 6604), the
    resolver's records follow, and AD is cleared since the CNAME is ours. An answer that would
    outgrow what the client accepts is cut to TC=1 so the client retries over TCP.
    None when the packet is not a parsable DNS response.
    """
    datagram = _parse_datagram(response_packet)
    original = text_to_name(original_name)
    if datagram is None or not original:
        return None
    response = datagram.message
    if not response.flags & FLAG_QR or len(response.questions) != 1:
        return None
    asked = response.questions[0]
    question = Question(original, asked.qtype, asked.qclass)
    answers = response.answers
    if response.flags & _RCODE_MASK in (RCODE_NOERROR, RCODE_NXDOMAIN):
        cname_ttl = min((record.ttl for record in answers), default=DEFAULT_CNAME_TTL)
        cname_class = CLASS_IN if asked.qclass == CLASS_ANY else asked.qclass
        cname = Record(original, TYPE_CNAME, cname_class, cname_ttl, (asked.name,))
        answers = (cname, *answers)
    flags = response.flags & ~FLAG_AD
    restored = replace(response, flags=flags, questions=(question,), answers=answers)
    limit = max(len(datagram.payload), EDNS_UDP_PAYLOAD if response.opt else _CLASSIC_UDP_LIMIT)
    if len(serialise_message(restored)) > limit:
        kept = tuple(record for record in response.additional if record.rtype == TYPE_OPT)
        restored = replace(
            restored, flags=flags | FLAG_TC, answers=(), authority=(), additional=kept
        )
    return _carry(datagram, restored, reply=False)


def answered_addresses(response_packet: bytes) -> list[tuple[bytes, int]]:
    """The A and AAAA records of a response's answer section: (address, TTL) each; none when
    the packet is not a parsable DNS response."""
    datagram = _parse_datagram(response_packet)
    if datagram is None or not datagram.message.flags & FLAG_QR:
        return []
    return [(record.rdata[0], record.ttl) for record in datagram.message.answers
            if (record.rtype, len(record.rdata[0])) in ((TYPE_A, 4), (TYPE_AAAA, 16))]


def safe_search_names() -> frozenset[str]:
    """Every name safe search rewrites (YouTube's in either mode): the data path sends only
    queries for these, and TLS to them, to Python."""
    return frozenset(_SAFE_SEARCH_TARGETS) | _YOUTUBE_NAMES


def bypass_names() -> frozenset[str]:
    """The names the bypass shield answers NXDOMAIN (bypass_answer)."""
    return _BYPASS_NXDOMAIN
