"""DNS answers, safe-search rewrites and bypass signals, checked with dpkt as the decoder."""

from __future__ import annotations

import socket
import struct

import dpkt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from packets import ipv4, ipv6, udp

from edufilter.enforce import dns
from edufilter.enforce.inject import parse_ip

CLIENT4, RESOLVER4 = "198.18.0.1", "198.18.1.2"
CLIENT6, RESOLVER6 = "2001:2::1", "2001:2:0:1::2"
SINKHOLE4, SINKHOLE6 = "198.18.0.2", "2001:2::2"
EDNS_COOKIE = struct.pack("!HH", 10, 8) + b"\x01\x02\x03\x04\x05\x06\x07\x08"
TYPE_HTTPS = 65


def opt_record(payload_size: int = 4096, do: bool = False, version: int = 0,
               options: bytes = b"") -> dpkt.dns.DNS.RR:
    return dpkt.dns.DNS.RR(
        name="", type=dns.TYPE_OPT, cls=payload_size,
        ttl=version << 16 | (0x8000 if do else 0), rdata=options,
    )  # fmt: skip


def query_message(name: str, qtype: int = dns.TYPE_A, ident: int = 0xBEEF, edns: bool = True,
                  **fields: object) -> bytes:
    message = dpkt.dns.DNS(id=ident, rd=1, qd=[dpkt.dns.DNS.Q(name=name, type=qtype)], **fields)
    if edns:
        message.ar = [opt_record(options=EDNS_COOKIE)]
    return bytes(message)


def query_packet(message: bytes, version: int = 4, sport: int = 41234) -> bytes:
    if version == 4:
        return ipv4(udp(message, dport=53, sport=sport), dpkt.ip.IP_PROTO_UDP,
                    src=CLIENT4, dst=RESOLVER4, ttl=64, id=0x1234)  # fmt: skip
    return ipv6(udp(message, dport=53, sport=sport), dpkt.ip.IP_PROTO_UDP,
                src=CLIENT6, dst=RESOLVER6)  # fmt: skip


def response_packet(message: bytes, version: int = 4, dport: int = 41234) -> bytes:
    if version == 4:
        return ipv4(udp(message, dport=dport, sport=53), dpkt.ip.IP_PROTO_UDP,
                    src=RESOLVER4, dst=CLIENT4, ttl=63, id=0x4321)  # fmt: skip
    return ipv6(udp(message, dport=dport, sport=53), dpkt.ip.IP_PROTO_UDP,
                src=RESOLVER6, dst=CLIENT6)  # fmt: skip


def decode(packet: bytes) -> tuple[dpkt.Packet, dpkt.udp.UDP, dpkt.dns.DNS]:
    """dpkt's view of an IP/UDP/DNS packet, after checking its lengths and checksums."""
    ip, segment = decode_udp(packet)
    return ip, segment, dpkt.dns.DNS(segment.data)


def decode_udp(packet: bytes) -> tuple[dpkt.Packet, dpkt.udp.UDP]:
    """dpkt's view of an IP/UDP packet, whose lengths and checksums dpkt computes alike."""
    ip: dpkt.Packet = dpkt.ip.IP(packet) if packet[0] >> 4 == 4 else dpkt.ip6.IP6(packet)
    assert isinstance(ip.data, dpkt.udp.UDP) and ip.data.sum != 0
    assert ip.data.ulen == len(ip.data) and (ip.v == 4 or ip.plen == len(packet) - 40)
    ip.sum = ip.data.sum = 0  # packing again makes dpkt compute both checksums and lengths
    assert bytes(ip) == packet
    return ip, ip.data


def question_bytes(message: bytes) -> bytes:
    """The question section as sent (name, type, class), for byte-exact comparison."""
    end = 12
    while message[end]:
        end += message[end] + 1
    return message[12 : end + 5]


def opt_of(message: dpkt.dns.DNS) -> list[dpkt.dns.DNS.RR]:
    return [record for record in message.ar if record.type == dns.TYPE_OPT]


# --- blocked answers ----------------------------------------------------------------------


@pytest.mark.parametrize("version", [4, 6])
def test_nxdomain_answer_with_soa_for_negative_caching(version: int) -> None:
    query = query_message("Blocked.Example.TEST", ident=0x5A5A)
    answer = dns.blocked_answer(query_packet(query, version), "nxdomain", SINKHOLE4, SINKHOLE6)
    assert answer is not None
    ip, segment, message = decode(answer)
    client, resolver = (CLIENT4, RESOLVER4) if version == 4 else (CLIENT6, RESOLVER6)
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    assert socket.inet_ntop(family, ip.src) == resolver
    assert socket.inet_ntop(family, ip.dst) == client
    assert (segment.sport, segment.dport) == (53, 41234)
    assert message.id == 0x5A5A and message.qr == 1 and message.rd == 1 and message.ra == 1
    assert message.rcode == dpkt.dns.DNS_RCODE_NXDOMAIN
    assert message.opcode == 0 and message.aa == 0 and message.tc == 0
    assert question_bytes(segment.data) == question_bytes(query)
    assert message.an == []
    (soa,) = message.ns
    assert soa.type == dns.TYPE_SOA and soa.name == "Example.TEST"
    assert soa.ttl == 60 and soa.minimum == 60


@pytest.mark.parametrize(
    ("qtype", "expected"),
    [
        (dns.TYPE_A, [(dns.TYPE_A, SINKHOLE4)]),
        (dns.TYPE_AAAA, [(dns.TYPE_AAAA, SINKHOLE6)]),
        (dns.TYPE_ANY, [(dns.TYPE_A, SINKHOLE4), (dns.TYPE_AAAA, SINKHOLE6)]),
        (TYPE_HTTPS, []),
        (dns.TYPE_MX, []),
    ],
)
def test_sinkhole_answers_address_records_and_nodata(
    qtype: int, expected: list[tuple[int, str]]
) -> None:
    query = query_message("ads.blocked.test", qtype=qtype)
    answer = dns.blocked_answer(query_packet(query), "sinkhole", SINKHOLE4, SINKHOLE6, ttl=30)
    assert answer is not None
    _, segment, message = decode(answer)
    assert message.rcode == dpkt.dns.DNS_RCODE_NOERR
    assert question_bytes(segment.data) == question_bytes(query)
    got = [
        (record.type, socket.inet_ntop(socket.AF_INET if record.type == 1 else socket.AF_INET6,
                                        record.rdata))
        for record in message.an
    ]  # fmt: skip
    assert got == expected
    assert all(record.name == "ads.blocked.test" and record.ttl == 30 for record in message.an)
    if not expected:
        (soa,) = message.ns  # NODATA: the name's own SOA, so the negative answer is cached
        assert soa.name == "ads.blocked.test" and soa.minimum == 30


def test_sinkhole_without_ipv6_address_gives_nodata_for_aaaa() -> None:
    query = query_packet(query_message("blocked.test", qtype=dns.TYPE_AAAA))
    _, _, message = decode(dns.blocked_answer(query, "sinkhole", SINKHOLE4, "") or b"")
    assert message.rcode == dpkt.dns.DNS_RCODE_NOERR and message.an == [] and len(message.ns) == 1


def test_edns_is_answered_with_our_opt_and_extended_error() -> None:
    query = dpkt.dns.DNS(id=7, rd=1, qd=[dpkt.dns.DNS.Q(name="blocked.test", type=1)])
    query.ar = [opt_record(payload_size=4096, do=True, options=EDNS_COOKIE)]
    answer = dns.blocked_answer(query_packet(bytes(query)), "nxdomain", SINKHOLE4, SINKHOLE6)
    _, _, message = decode(answer or b"")
    (opt,) = opt_of(message)
    assert opt.name == "" and opt.cls == dns.EDNS_UDP_PAYLOAD
    assert opt.ttl == 0x8000  # extended RCODE 0, version 0, DO copied
    assert opt.rdata == struct.pack("!HHH", 15, 2, 15)  # EDE "Blocked"; the cookie is not echoed


def test_no_edns_in_the_query_no_opt_in_the_answer() -> None:
    query = query_packet(query_message("blocked.test", edns=False))
    answer = dns.blocked_answer(query, "nxdomain", SINKHOLE4, SINKHOLE6)
    _, segment, message = decode(answer or b"")
    assert message.ar == [] and len(segment.data) <= 512


def test_unknown_edns_version_gets_badvers() -> None:
    query = dpkt.dns.DNS(id=9, rd=1, qd=[dpkt.dns.DNS.Q(name="blocked.test", type=1)])
    query.ar = [opt_record(version=1)]
    answer = dns.blocked_answer(query_packet(bytes(query)), "sinkhole", SINKHOLE4, SINKHOLE6)
    _, _, message = decode(answer or b"")
    (opt,) = opt_of(message)
    assert message.rcode == 0 and opt.ttl >> 24 == 1  # BADVERS = 16 = 1 << 4 | 0
    assert message.an == [] and message.ns == []


def test_checking_disabled_is_copied() -> None:
    query = bytearray(query_message("blocked.test"))
    query[3] |= dns.FLAG_CD
    answer = dns.blocked_answer(query_packet(bytes(query)), "nxdomain", SINKHOLE4, SINKHOLE6)
    _, segment, _ = decode(answer or b"")
    assert struct.unpack_from("!H", segment.data, 2)[0] & dns.FLAG_CD


def test_query_name_keeps_case_and_escapes_odd_labels() -> None:
    message = (
        struct.pack("!6H", 1, 0x0100, 1, 0, 0, 0)
        + b"\x07We.B\\s\xff\x04Test\x00" + struct.pack("!HH", 1, 1)
    )
    name = dns.query_name(query_packet(message))
    assert name == "We\\.B\\\\s\\255.Test"
    assert dns.text_to_name(name) == (b"We.B\\s\xff", b"Test")


NOT_A_QUERY = {
    "response": bytes(dpkt.dns.DNS(id=1, qr=1, qd=[dpkt.dns.DNS.Q(name="a.test")])),
    "notify": bytes(dpkt.dns.DNS(id=1, op=4 << 11, qd=[dpkt.dns.DNS.Q(name="a.test")])),
    "two questions": bytes(
        dpkt.dns.DNS(id=1, qd=[dpkt.dns.DNS.Q(name="a.test"), dpkt.dns.DNS.Q(name="b.test")])
    ),
    "no question": bytes(dpkt.dns.DNS(id=1, qd=[])),
    "two OPT records": bytes(
        dpkt.dns.DNS(id=1, qd=[dpkt.dns.DNS.Q(name="a.test")], ar=[opt_record(), opt_record()])
    ),
    "OPT not owned by the root": bytes(
        dpkt.dns.DNS(id=1, qd=[dpkt.dns.DNS.Q(name="a.test")],
                     ar=[dpkt.dns.DNS.RR(name="x", type=41, cls=512)])
    ),  # fmt: skip
    "compression loop": struct.pack("!6H", 1, 0, 1, 0, 0, 0) + b"\xc0\x0c" + b"\x00\x01\x00\x01",
    "forward pointer": struct.pack("!6H", 1, 0, 1, 0, 0, 0) + b"\xc0\x20" + b"\x00\x01\x00\x01",
    "truncated question": query_message("a.test", edns=False)[:-3],
    "label over 63": struct.pack("!6H", 1, 0, 1, 0, 0, 0) + b"\x40" + b"a" * 64 + b"\x00\0\1\0\1",
    "header only": b"\x00" * 11,
}


@pytest.mark.parametrize("message", NOT_A_QUERY.values(), ids=NOT_A_QUERY.keys())
def test_not_a_query_gives_none(message: bytes) -> None:
    packet = query_packet(message)
    assert dns.blocked_answer(packet, "nxdomain", SINKHOLE4, SINKHOLE6) is None
    assert dns.rewrite_query(packet, "forcesafesearch.google.com") is None
    assert dns.query_name(packet) is None


def test_non_udp_fragments_and_garbage_give_none() -> None:
    good = query_packet(query_message("blocked.test"))
    first_fragment = bytearray(good)
    first_fragment[6] |= 0x20  # more fragments
    tcp = bytearray(good)
    tcp[9] = 6
    for packet in (b"", b"\x45", bytes(first_fragment), bytes(tcp), good[:30], b"\x60" + good):
        assert dns.blocked_answer(packet, "nxdomain", SINKHOLE4, SINKHOLE6) is None


def test_configuration_errors_raise() -> None:
    packet = query_packet(query_message("blocked.test"))
    with pytest.raises(ValueError):
        dns.blocked_answer(packet, "refuse", SINKHOLE4, SINKHOLE6)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        dns.blocked_answer(packet, "sinkhole", SINKHOLE6, SINKHOLE6)
    with pytest.raises(ValueError):
        dns.safe_search_target("www.youtube.com", "off")  # type: ignore[arg-type]


# --- safe search and bypass signals --------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("www.google.com", "forcesafesearch.google.com"),
        ("google.com", "forcesafesearch.google.com"),
        ("WWW.Google.BE.", "forcesafesearch.google.com"),
        ("www.google.co.uk", "forcesafesearch.google.com"),
        ("google.de", "forcesafesearch.google.com"),
        ("www.google.cat", "forcesafesearch.google.com"),
        ("www.bing.com", "strict.bing.com"),
        ("duckduckgo.com", "safe.duckduckgo.com"),
        ("www.duckduckgo.com", "safe.duckduckgo.com"),
        ("start.duckduckgo.com", "safe.duckduckgo.com"),
        ("www.youtube.com", "restrict.youtube.com"),
        ("m.youtube.com", "restrict.youtube.com"),
        ("youtubei.googleapis.com", "restrict.youtube.com"),
        ("youtube.googleapis.com", "restrict.youtube.com"),
        ("www.youtube-nocookie.com", "restrict.youtube.com"),
        ("mail.google.com", None),
        ("forcesafesearch.google.com", None),
        ("www.google.example", None),
        ("bing.com.evil.test", None),
        ("safe.duckduckgo.com", None),
        ("www.google.co.u\u212a", None),  # KELVIN SIGN lowercases to "k": not ASCII, no match
    ],
)
def test_safe_search_targets(name: str, target: str | None) -> None:
    assert dns.safe_search_target(name) == target


def test_youtube_moderate_mode() -> None:
    assert dns.safe_search_target("www.youtube.com", "moderate") == "restrictmoderate.youtube.com"
    assert dns.safe_search_target("www.google.nl", "moderate") == "forcesafesearch.google.com"


@pytest.mark.parametrize(
    ("name", "answer"),
    [
        ("use-application-dns.net", "nxdomain"),
        ("USE-application-dns.NET.", "nxdomain"),
        ("mask.icloud.com", "nxdomain"),
        ("mask-h2.icloud.com", "nxdomain"),
        ("www.icloud.com", None),
        ("x.mask.icloud.com", None),
        ("application-dns.net", None),
    ],
)
def test_bypass_signals(name: str, answer: str | None) -> None:
    assert dns.bypass_answer(name) == answer


def upstream_answer(
    query: dpkt.dns.DNS, records: list[tuple[str, int, object]], rcode: int = 0, ad: bool = False
) -> dpkt.dns.DNS:
    """What the resolver says to the rewritten query: records (owner, type, data)."""
    answer = dpkt.dns.DNS(id=query.id, qr=1, rd=1, ra=1, rcode=rcode, qd=query.qd, ar=query.ar)
    if ad:
        answer.op |= dns.FLAG_AD
    for owner, rtype, data in records:
        record = dpkt.dns.DNS.RR(name=owner, type=rtype, ttl=300)
        if rtype == dns.TYPE_CNAME:
            record.cname = data
        elif rtype == dns.TYPE_A:
            record.ip = socket.inet_aton(str(data))
        else:
            record.ip6 = socket.inet_pton(socket.AF_INET6, str(data))
        answer.an.append(record)
    return answer


PROVIDER_ANSWERS = {
    "WwW.GooGle.com": [("forcesafesearch.google.com", 1, "216.239.38.120")],
    "www.youtube.com": [("restrict.youtube.com", 28, "2001:4860:4802:32::78")],
    "www.bing.com": [
        ("strict.bing.com", dns.TYPE_CNAME, "strict-bing-com.a-0001.a-msedge.net"),
        ("strict-bing-com.a-0001.a-msedge.net", 1, "204.79.197.220"),
    ],
    "duckduckgo.com": [("safe.duckduckgo.com", 1, "52.142.124.215")],
}


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("original", PROVIDER_ANSWERS)
def test_rewrite_and_restore_round_trip(original: str, version: int) -> None:
    qtype = dns.TYPE_AAAA if "youtube" in original else dns.TYPE_A
    query = query_message(original, qtype=qtype, ident=0x0C0C)
    packet = query_packet(query, version)
    target = dns.safe_search_target(original)
    assert target is not None

    rewritten = dns.rewrite_query(packet, target)
    assert rewritten is not None
    ip, segment, asked = decode(rewritten)
    assert asked.qd[0].name == target and asked.qd[0].type == qtype
    assert asked.id == 0x0C0C and asked.rd == 1 and asked.qr == 0
    assert opt_of(asked)[0].rdata == EDNS_COOKIE  # the client's EDNS travels on unchanged
    # The packet is rewritten, not replaced: its IP header fields stay.
    if version == 4:
        assert (ip.tos, ip.ttl, ip.id) == (0, 64, 0x1234)
    else:
        assert rewritten[:4] == packet[:4] and rewritten[7:40] == packet[7:40]

    answer = upstream_answer(asked, PROVIDER_ANSWERS[original], ad=True)
    restored = dns.restore_answer(response_packet(bytes(answer), version), original)
    assert restored is not None
    _, segment, message = decode(restored)
    assert question_bytes(segment.data) == question_bytes(query)
    assert message.id == 0x0C0C and message.qr == 1 and message.rcode == 0
    assert not message.op & dns.FLAG_AD  # our CNAME is not signed
    cname, *rest = message.an
    assert (cname.name, cname.type, cname.cname) == (original, dns.TYPE_CNAME, target)
    assert cname.ttl == 300
    expected = [(owner, rtype) for owner, rtype, _ in PROVIDER_ANSWERS[original]]
    assert [(record.name, record.type) for record in rest] == expected
    assert opt_of(message)[0].rdata == EDNS_COOKIE


def test_restore_fixes_pointers_into_the_old_question() -> None:
    """A handmade answer whose every name points into the question: all must be re-based."""
    header = struct.pack("!6H", 0x0101, 0x8180, 1, 2, 0, 0)
    question = b"\x0fforcesafesearch\x06google\x03com\x00" + struct.pack("!HH", 1, 1)
    cname = b"\xc0\x0c" + struct.pack("!HHIH", 5, 1, 100, 6) + b"\x03www\xc0\x1c"  # www.google.com
    a_record = b"\xc0\x38" + struct.pack("!HHIH", 1, 1, 100, 4) + bytes([198, 18, 1, 120])
    response = header + question + cname + a_record
    restored = dns.restore_answer(response_packet(response), "Www.Google.Com")
    _, _, message = decode(restored or b"")
    assert message.qd[0].name == "Www.Google.Com"
    assert [(r.name, r.type) for r in message.an] == [
        ("Www.Google.Com", dns.TYPE_CNAME),
        ("forcesafesearch.google.com", dns.TYPE_CNAME),
        ("www.google.com", dns.TYPE_A),
    ]
    assert message.an[1].cname == "www.google.com"


def test_restore_keeps_negative_answers_and_skips_cname_on_servfail() -> None:
    query = dpkt.dns.DNS(id=3, rd=1, qd=[dpkt.dns.DNS.Q(name="strict.bing.com", type=65)])
    nodata = upstream_answer(query, [])
    nodata.ns = [dpkt.dns.DNS.RR(name="bing.com", type=dns.TYPE_SOA, ttl=30, mname="ns1.bing.com",
                                 rname="hostmaster.bing.com", serial=1, refresh=2, retry=3,
                                 expire=4, minimum=5)]  # fmt: skip
    restored = dns.restore_answer(response_packet(bytes(nodata)), "www.bing.com")
    _, _, message = decode(restored or b"")
    assert [(r.name, r.type) for r in message.an] == [("www.bing.com", dns.TYPE_CNAME)]
    assert message.an[0].ttl == dns.DEFAULT_CNAME_TTL
    assert message.ns[0].type == dns.TYPE_SOA and message.ns[0].minimum == 5
    servfail = upstream_answer(query, [], rcode=dpkt.dns.DNS_RCODE_SERVFAIL)
    restored = dns.restore_answer(response_packet(bytes(servfail)), "www.bing.com")
    _, _, message = decode(restored or b"")
    assert message.rcode == dpkt.dns.DNS_RCODE_SERVFAIL and message.an == []
    assert message.qd[0].name == "www.bing.com"


@pytest.mark.parametrize("edns", [False, True])
def test_restore_truncates_what_no_longer_fits(edns: bool) -> None:
    query = dpkt.dns.DNS(id=4, rd=1, qd=[dpkt.dns.DNS.Q(name="forcesafesearch.google.com")])
    if edns:
        query.ar = [opt_record()]
    limit = dns.EDNS_UDP_PAYLOAD if edns else 512
    records = [("forcesafesearch.google.com", 1, f"198.18.1.{i}") for i in range(1, 200)]
    answer = upstream_answer(query, [])  # the largest answer that still fits the limit
    while len(bytes(larger := upstream_answer(query, records[: len(answer.an) + 1]))) <= limit:
        answer = larger
    restored = dns.restore_answer(response_packet(bytes(answer)), "www.google.com")
    _, segment, message = decode(restored or b"")
    assert message.tc == 1 and message.an == [] and message.ns == []
    assert len(opt_of(message)) == (1 if edns else 0)
    assert message.qd[0].name == "www.google.com" and len(segment.data) <= limit


def test_restore_rejects_queries_and_bad_names() -> None:
    query = query_packet(query_message("forcesafesearch.google.com"))
    assert dns.restore_answer(query, "www.google.com") is None
    answer = response_packet(bytes(upstream_answer(dpkt.dns.DNS(id=1, qd=[dpkt.dns.DNS.Q(
        name="forcesafesearch.google.com")]), [])))  # fmt: skip
    for bad in ("", ".", "a..b", "x" * 64 + ".test", "é.test", "a\\"):
        assert dns.restore_answer(answer, bad) is None


# --- names and fuzzing --------------------------------------------------------------------

labels = st.lists(st.binary(min_size=1, max_size=63), min_size=1, max_size=4)


@given(labels)
def test_presentation_format_round_trip(name: list[bytes]) -> None:
    assert dns.text_to_name(dns.name_to_text(tuple(name))) == tuple(name)


@given(labels, st.sampled_from([4, 6]))
def test_query_name_and_restore_give_back_the_exact_question(
    name: list[bytes], version: int
) -> None:
    wire = b"".join(bytes([len(label)]) + label for label in name) + b"\x00"
    query = struct.pack("!6H", 77, 0x0100, 1, 0, 0, 0) + wire + struct.pack("!HH", 1, 1)
    text = dns.query_name(query_packet(query, version))
    assert text is not None
    rewritten = dns.rewrite_query(query_packet(query, version), "forcesafesearch.google.com")
    _, _, asked = decode(rewritten or b"")
    restored = dns.restore_answer(response_packet(bytes(upstream_answer(asked, [])), version), text)
    _, segment = decode_udp(restored or b"")  # dpkt cannot decode labels that are not UTF-8
    assert question_bytes(segment.data) == question_bytes(query)


VALID_PACKETS = [
    query_packet(query_message("www.google.com")),
    query_packet(query_message("Blocked.Test", qtype=dns.TYPE_AAAA), 6),
    query_packet(query_message("x.test", edns=False)),
    response_packet(bytes(upstream_answer(
        dpkt.dns.DNS(id=5, qd=[dpkt.dns.DNS.Q(name="strict.bing.com")], ar=[opt_record()]),
        PROVIDER_ANSWERS["www.bing.com"]))),  # fmt: skip
    response_packet(bytes(upstream_answer(
        dpkt.dns.DNS(id=6, qd=[dpkt.dns.DNS.Q(name="restrict.youtube.com", type=28)]),
        PROVIDER_ANSWERS["www.youtube.com"])), 6),  # fmt: skip
]


def exercise(packet: bytes) -> None:
    """Every entry point on packet: each returns None or a packet that parses again."""
    results = [
        dns.blocked_answer(packet, "nxdomain", SINKHOLE4, SINKHOLE6),
        dns.blocked_answer(packet, "sinkhole", SINKHOLE4, SINKHOLE6),
        dns.rewrite_query(packet, "restrict.youtube.com"),
        dns.restore_answer(packet, "www.youtube.com"),
    ]
    dns.query_name(packet)
    for result in results:
        if result is not None:
            ip = parse_ip(result)
            assert ip is not None and dns.parse_message(ip.transport[8:]) is not None


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(data: bytes) -> None:
    exercise(data)
    exercise(VALID_PACKETS[0][:28] + data)  # a valid IPv4/UDP header before random DNS bytes


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(VALID_PACKETS),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=6),
    st.integers(0, 400),
)
def test_mutated_packets_never_raise(
    packet: bytes, changes: list[tuple[int, int]], cut: int
) -> None:
    mutated = bytearray(packet)
    for position, value in changes:
        if mutated:
            mutated[position % len(mutated)] = value
    exercise(bytes(mutated))
    exercise(bytes(mutated[: cut % (len(mutated) + 1)]))


@pytest.mark.parametrize("version", [4, 6])
def test_answered_addresses_are_what_safe_search_learns(version: int) -> None:
    bing = upstream_answer(dpkt.dns.DNS(query_message("strict.bing.com")), PROVIDER_ANSWERS["www.bing.com"])
    assert dns.answered_addresses(response_packet(bytes(bing), version)) == [(socket.inet_aton("204.79.197.220"), 300)]
    youtube = upstream_answer(dpkt.dns.DNS(query_message("restrict.youtube.com", dns.TYPE_AAAA)),
                              PROVIDER_ANSWERS["www.youtube.com"])
    assert dns.answered_addresses(response_packet(bytes(youtube), version)) == [
        (socket.inet_pton(socket.AF_INET6, "2001:4860:4802:32::78"), 300)]
    assert dns.answered_addresses(query_packet(query_message("www.google.com"), version)) == []
    assert dns.answered_addresses(b"\x45garbage") == []
