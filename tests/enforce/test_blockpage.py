"""The block page: languages, escaping, forged TCP segments and the block-page server."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import replace
from datetime import datetime
from html.parser import HTMLParser

import dpkt
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st
from packets import ipv4, ipv6

from edufilter.enforce.blockpage import (
    EVASION_CATEGORY,
    BlockInfo,
    block_response_segments,
    choose_language,
    render_block_page,
    render_neutral_page,
    reset_to_server,
)
from edufilter.enforce.blockpage_server import make_blockpage_app
from edufilter.errors import EdufilterError

INFO = BlockInfo(
    name="games.example.test",
    category_id="games",
    category_title="Online games",
    group_title="Pupils year 5",
    action="block",
    reference="K7Q2M",
    time=datetime(2024, 5, 14, 10, 42),
)
REQUEST = b"GET /play HTTP/1.1\r\nHost: games.example.test\r\nAccept-Language: nl-BE\r\n\r\n"


@pytest.mark.parametrize(
    ("header", "default", "expected"),
    [
        ("nl-BE,nl;q=0.9", "en", "nl"),
        ("fr-BE,fr;q=0.9,en;q=0.5", "nl", "fr"),
        ("de-DE", "nl", "de"),
        ("en-GB", "nl", "en"),
        ("NL-be", "en", "nl"),
        ("en;q=0.5, fr;q=0.8", "nl", "fr"),
        ("de, fr", "nl", "de"),  # equal q: the order given
        ("ja, de;q=0.1", "nl", "de"),
        ("nl;q=0, fr;q=0.2", "en", "fr"),
        ("ja, zh;q=0.5", "nl", "en"),  # a preference, none of ours: English
        ("es, *;q=0.5", "de", "de"),
        ("*", "fr", "fr"),
        (None, "nl", "nl"),
        ("", "de", "de"),
        (" , ;q=1, nl;q=abc, fr ; Q=0.7 ", "en", "fr"),
        ("nl;q=2", "de", "de"),  # q above 1 is invalid and ignored
    ],
)
def test_language_choice(header: str | None, default: str, expected: str) -> None:
    assert choose_language(header, default) == expected


def test_unknown_default_language_raises() -> None:
    with pytest.raises(ValueError):
        choose_language("nl", "es")


class TextCollector(HTMLParser):
    """Text per element, as a browser would show it (entities decoded)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[str] = []  # every start tag seen
        self.open: list[str] = []
        self.text: dict[str, list[str]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append(tag)
        if tag not in ("meta", "br"):
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if self.open and self.open[-1] == tag:
            self.open.pop()

    def handle_data(self, data: str) -> None:
        self.text.setdefault(self.open[-1] if self.open else "", []).append(data)


def page_text(body: bytes) -> TextCollector:
    collector = TextCollector()
    collector.feed(body.decode("utf-8"))
    return collector


@pytest.mark.parametrize(
    ("language", "phrases"),
    [
        ("nl-BE,nl;q=0.9", ["is geblokkeerd", "leerkracht", "ICT-coördinator", "Referentie"]),
        ("fr-BE", ["est bloqué", "enseignant", "coordinateur TIC", "Référence"]),
        ("en", ["is blocked", "teacher", "ICT coordinator", "Reference"]),
        ("de-DE", ["gesperrt", "Lehrkraft", "IT-Koordination", "Referenz"]),
    ],
)
def test_page_in_each_language(language: str, phrases: list[str]) -> None:
    status, headers, body = render_block_page(INFO, language)
    assert status == 403
    assert headers["Cache-Control"] == "no-store"
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Content-Language"] == language[:2]
    text = body.decode()
    for phrase in [*phrases, "games.example.test", "Online games", "Pupils year 5", "K7Q2M"]:
        assert phrase in text
    assert text.count("K7Q2M") == 2  # in the details and in what to do
    assert f'<html lang="{language[:2]}">' in text
    assert len(body) < 4096


def test_page_is_self_contained() -> None:
    _, headers, body = render_block_page(INFO, None)
    text = body.decode().lower()
    for forbidden in ("<script", "src=", "href=", "url(", "@import", "http://", "https://"):
        assert forbidden not in text
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    neutral_status, neutral_headers, neutral = render_neutral_page("fr")
    assert neutral_status == 404 and neutral_headers["Cache-Control"] == "no-store"
    assert "Réseau de l’école" in neutral.decode() and "<script" not in neutral.decode()


HOSTILE = '"><script>alert(1)</script><img src=x onerror=alert(2)>&amp;{site}'


def test_hostile_values_are_escaped_everywhere() -> None:
    info = BlockInfo(
        name=HOSTILE, category_id="x", category_title=HOSTILE, group_title=HOSTILE,
        action="block", reference=HOSTILE[:40], time=INFO.time,
    )  # fmt: skip
    _, _, body = render_block_page(info, "en")
    text = body.decode()
    assert "<script" not in text and "<img" not in text
    collected = page_text(body)
    assert collected.elements.count("script") == 0 and "img" not in collected.elements
    assert HOSTILE in "".join(collected.text["bdi"])
    assert HOSTILE in "".join(collected.text["dd"])


@given(st.text(st.characters(blacklist_categories=()), max_size=300))
def test_any_name_is_shown_as_text(name: str) -> None:
    _, _, body = render_block_page(replace(INFO, name=name), None)
    shown = "".join(page_text(body).text.get("bdi", []))
    if len(name) <= 253 and name.isprintable():
        assert shown == name


def test_huge_values_are_clipped() -> None:
    info = BlockInfo("a" * 100_000, "x", "b" * 10_000, "c" * 10_000, "block", "d" * 5000, INFO.time)
    _, _, body = render_block_page(info, "de")
    assert len(body) < 4096


# --- forged segments --------------------------------------------------------------------------

CLIENT4, SERVER4 = "198.18.0.1", "198.18.1.2"
CLIENT6, SERVER6 = "2001:2::1", "2001:2:0:1::2"
TIMESTAMPS = struct.pack("!BBBBII", 1, 1, 8, 10, 111_111, 222_222)


ACK_PSH = dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH


def request_packet(
    version: int = 4, seq: int = 1000, ack: int = 5000, flags: int = ACK_PSH,
    options: bytes = TIMESTAMPS, payload: bytes = REQUEST,
) -> bytes:  # fmt: skip
    segment = dpkt.tcp.TCP(
        sport=40000, dport=80, seq=seq & 0xFFFFFFFF, ack=ack & 0xFFFFFFFF, flags=flags,
        opts=options, off=(20 + len(options)) // 4, data=payload,
    )  # fmt: skip
    if version == 4:
        return ipv4(segment, dpkt.ip.IP_PROTO_TCP, src=CLIENT4, dst=SERVER4)
    return ipv6(segment, dpkt.ip.IP_PROTO_TCP, src=CLIENT6, dst=SERVER6)


def decode_tcp(packet: bytes) -> tuple[dpkt.Packet, dpkt.tcp.TCP]:
    """dpkt's view of a forged packet, whose lengths and checksums dpkt computes alike."""
    ip: dpkt.Packet = dpkt.ip.IP(packet) if packet[0] >> 4 == 4 else dpkt.ip6.IP6(packet)
    assert isinstance(ip.data, dpkt.tcp.TCP) and (ip.v == 4 or ip.plen == len(packet) - 40)
    ip.sum = ip.data.sum = 0  # packing again makes dpkt compute both checksums and lengths
    assert bytes(ip) == packet
    return ip, ip.data


def tcp_option(segment: dpkt.tcp.TCP, kind: int) -> bytes | None:
    for option_kind, data in dpkt.tcp.parse_opts(segment.opts):
        if option_kind == kind:
            return data
    return None


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("mss", [1200, 536, 100])
def test_segments_continue_the_connection_and_end_with_fin(version: int, mss: int) -> None:
    request = request_packet(version, seq=0xFFFFFF00, ack=0xFFFFFFF0)  # both wrap around
    original = dpkt.ip.IP(request) if version == 4 else dpkt.ip6.IP6(request)
    status, headers, body = render_block_page(INFO, "nl-BE")
    segments = block_response_segments(request, body, mss=mss, status=status, headers=headers)
    assert len(segments) > 1
    expected_seq = 0xFFFFFFF0
    stream = b""
    for index, packet in enumerate(segments):
        ip, segment = decode_tcp(packet)
        assert (ip.src, ip.dst) == (original.dst, original.src)
        assert (segment.sport, segment.dport) == (80, 40000)
        assert segment.seq == expected_seq
        assert segment.ack == (0xFFFFFF00 + len(REQUEST)) & 0xFFFFFFFF
        last = index == len(segments) - 1
        assert segment.flags == ACK_PSH | (dpkt.tcp.TH_FIN if last else 0)
        assert len(segment.opts) + len(segment.data) <= mss
        # Timestamps echoed: TSval = the client's TSecr, TSecr = the client's TSval.
        echoed = tcp_option(segment, dpkt.tcp.TCP_OPT_TIMESTAMP)
        assert echoed == struct.pack("!II", 222_222, 111_111)
        stream += segment.data
        expected_seq = (expected_seq + len(segment.data)) & 0xFFFFFFFF
    response = dpkt.http.Response(stream)
    assert response.status == "403" and response.headers["connection"] == "close"
    assert int(response.headers["content-length"]) == len(body) and response.body == body
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-language"] == "nl"


def test_request_with_fin_and_without_timestamps() -> None:
    request = request_packet(
        flags=dpkt.tcp.TH_ACK | dpkt.tcp.TH_FIN, options=b"", payload=b"GET / HTTP/1.0\r\n\r\n"
    )
    (packet,) = block_response_segments(request, b"blocked", mss=1460)
    _, segment = decode_tcp(packet)
    assert segment.ack == 1000 + 18 + 1  # the FIN takes a sequence number too
    assert segment.opts == b"" and segment.flags & dpkt.tcp.TH_FIN
    assert dpkt.http.Response(segment.data).body == b"blocked"


@pytest.mark.parametrize("version", [4, 6])
def test_reset_to_server_hits_the_next_expected_byte(version: int) -> None:
    request = request_packet(version, seq=123_456, ack=654_321)
    ip, segment = decode_tcp(reset_to_server(request) or b"")
    original = dpkt.ip.IP(request) if version == 4 else dpkt.ip6.IP6(request)
    assert (ip.src, ip.dst) == (original.src, original.dst)
    assert (segment.sport, segment.dport) == (40000, 80)
    # The server never got the dropped request, so it still expects the request's first byte.
    assert segment.seq == 123_456 and segment.ack == 654_321
    assert segment.flags == dpkt.tcp.TH_RST | dpkt.tcp.TH_ACK and segment.data == b""


@pytest.mark.parametrize(
    "packet",
    [
        request_packet(flags=dpkt.tcp.TH_SYN),
        request_packet(flags=dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK),
        request_packet(flags=dpkt.tcp.TH_RST | dpkt.tcp.TH_ACK),
        request_packet(flags=dpkt.tcp.TH_PUSH),  # no ACK: not an established connection
        request_packet()[:30],
        ipv4(dpkt.udp.UDP(sport=1, dport=2, data=b"x"), dpkt.ip.IP_PROTO_UDP),
        b"",
        b"\x45" + b"\x00" * 50,
    ],
)
def test_not_an_established_segment(packet: bytes) -> None:
    assert block_response_segments(packet, b"page") == []
    assert reset_to_server(packet) is None


@settings(max_examples=300)
@given(st.binary(max_size=120), st.integers(0, 100))
def test_random_and_mutated_segments_never_raise(data: bytes, position: int) -> None:
    for packet in (data, request_packet()[:position] + data, request_packet(6)[:position] + data):
        for forged in [*block_response_segments(packet, b"page", mss=64), reset_to_server(packet)]:
            if forged is not None:
                decode_tcp(forged)


# --- the block-page server ----------------------------------------------------------------


def serve(explain, requests):  # type: ignore[no-untyped-def]
    """Run requests (method, path, headers) against the app; return (status, headers, text)."""

    async def run() -> list[tuple[int, dict[str, str], str]]:
        async with TestClient(TestServer(make_blockpage_app(explain, "nl"))) as client:
            results = []
            for method, path, headers in requests:
                response = await client.request(method, path, headers=headers)
                results.append((response.status, dict(response.headers), await response.text()))
            return results

    return asyncio.run(run())


def test_blockpage_app_serves_pages_by_host() -> None:
    calls = []

    def explain(host: str, client: str, accept_language: str | None) -> BlockInfo | None:
        calls.append((host, client, accept_language))
        if host == "games.example.test":
            return INFO
        if host == "broken.test":
            raise EdufilterError("policy image missing")
        return None

    results = serve(explain, [
        ("GET", "/healthz", {}),
        ("GET", "/some/page?x=1", {"Host": "Games.Example.Test.:80", "Accept-Language": "fr-BE"}),
        ("HEAD", "/", {"Host": "games.example.test"}),
        ("POST", "/form", {"Host": "games.example.test", "Accept-Language": "de"}),
        ("GET", "/", {"Host": "unknown.test", "Accept-Language": "en"}),
        ("GET", "/", {"Host": "broken.test"}),
        ("GET", "/", {"Host": "[2001:2::2]:80"}),
    ])  # fmt: skip
    healthz, french, head, german, unknown, broken, literal = results
    assert healthz[0] == 200 and healthz[2] == "ok\n"
    assert french[0] == 403 and "est bloqué" in french[2] and "K7Q2M" in french[2]
    assert french[1]["Cache-Control"] == "no-store"
    assert head[0] == 403 and head[2] == ""
    assert german[0] == 403 and "gesperrt" in german[2]
    assert unknown[0] == 404 and "nothing to see" in unknown[2]
    assert broken[0] == 404 and "Hier is niets te zien" in broken[2]  # the default: Dutch
    assert literal[0] == 404
    assert calls[0] == ("games.example.test", "127.0.0.1", "fr-BE")
    assert ("2001:2::2", "127.0.0.1", None) in calls


@pytest.mark.parametrize(("language", "phrase"), [("nl", "Verborgen website"), ("fr", "Site masqué"),
                                                  ("en", "Hidden site"), ("de", "Verborgene Website")])
def test_a_circumvention_attempt_says_why(language: str, phrase: str) -> None:
    evasion = replace(INFO, category_id=EVASION_CATEGORY, category_title="evasion")
    text = render_block_page(evasion, language)[2].decode()
    assert phrase in text and "<dd>evasion</dd>" not in text
    assert phrase not in render_block_page(INFO, language)[2].decode()
