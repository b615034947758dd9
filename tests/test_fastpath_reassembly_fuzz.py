"""Fuzzing the reassembly with real ClientHellos (OpenSSL's 517 bytes, Chromium's ~2 KB from the
sample capture): any segmentation, order, retransmission and overlap yields the true name or
an evasion flag, never another name.

The oracle is the stream a server builds from the same segments in the same order, the first
copy of each byte kept (read by the dpkt-based reference parser). Whenever the extractor names
a flow without an evasion flag, no byte has had two different copies, so that stream is the
only one a server could read, whichever copy its TCP stack keeps."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import dpkt
from evasion_packets import segment, syn_segment
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from packets import openssl_client_hello, post_quantum_client_hello, tls_records
from reference_extractor import Malformed, NeedMoreBytes, client_hello_verdict

import edufilter
from edufilter._fastpath import Evasion, FlowExtractor
from edufilter.capture.pcapfile import ip_packet, read_frames

SAMPLE = Path(edufilter.__file__).parent / "data" / "sample-school.pcapng"
ISN = 0xFFFFFF00  # the sequence numbers wrap inside the ClientHello


@cache
def client_hellos() -> list[tuple[bytes, str]]:
    """(ClientHello record, its name): the sample capture's, OpenSSL's and a Chromium-sized one."""
    streams: dict[tuple[bytes, int], dict[int, bytes]] = {}
    for frame in read_frames(SAMPLE):
        raw = ip_packet(frame)
        if raw is None:
            continue
        packet = dpkt.ip.IP(bytes(raw)) if raw[0] >> 4 == 4 else dpkt.ip6.IP6(bytes(raw))
        transport = packet.data
        if isinstance(transport, dpkt.tcp.TCP) and transport.dport == 443 and transport.data:
            streams.setdefault((bytes(packet.src), transport.sport), {})[transport.seq] = bytes(transport.data)
    found = [tls_records(post_quantum_client_hello(b"chromium.school.test")),
             openssl_client_hello("openssl.school.test")]
    for pieces in streams.values():
        stream = b"".join(pieces[seq] for seq in sorted(pieces))
        if stream[:1] == b"\x16" and len(stream) >= 5 + int.from_bytes(stream[3:5], "big"):
            found.append(stream[:5 + int.from_bytes(stream[3:5], "big")])
    return [(hello, client_hello_verdict(hello)[0]) for hello in found]


def test_the_corpus_holds_real_browser_hellos() -> None:
    sizes = sorted(len(hello) for hello, _ in client_hellos())
    assert len(sizes) >= 6 and sizes[-1] > 1900 and all(name for _, name in client_hellos())


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[bytes, str, list[tuple[int, bytes]], bool]:
    """A ClientHello, its name, and the (offset, bytes) segments in arrival order; True when
    some copy differs from the real bytes."""
    hello, name = draw(st.sampled_from(client_hellos()))
    if draw(st.integers(0, 9)) == 0:
        cuts = list(range(1, len(hello)))                     # one byte per segment
    else:
        cuts = sorted(set(draw(st.lists(st.integers(1, len(hello) - 1), max_size=40))))
    edges = [0, *cuts, len(hello)]
    sent = [(start, hello[start:end]) for start, end in zip(edges, edges[1:])]
    differs = False
    for start, length, flip in draw(st.lists(st.tuples(st.integers(0, len(hello) - 1), st.integers(1, 600),
                                                       st.integers(0, 255)), max_size=4)):
        copy = bytearray(hello[start:start + length])
        if flip:                                               # a differing copy: one byte changed
            copy[flip % len(copy)] ^= flip
            differs = True
        sent.append((start, bytes(copy)))
    order = draw(st.permutations(range(len(sent)))) if len(sent) <= 64 else \
        draw(st.lists(st.integers(0, len(sent) - 1), min_size=len(sent), max_size=len(sent)))
    arrival = [sent[i] for i in order]
    if len(order) == len(sent) and sorted(order) != list(range(len(sent))):
        arrival += sent                                        # the random draw may repeat: send all too
    return hello, name, arrival, differs


TLS_MAX_RECORD = 16384 + 2048  # RFC 8446 5.2: a ciphertext's plaintext and its expansion
GATEWAY_HELLO_BYTES = 16384  # FlowExtractor's default buffer: the longest ClientHello it reads


def first_copy_prefix(held: dict[int, int]) -> bytes:
    prefix = bytearray()
    while len(prefix) in held:
        prefix.append(held[len(prefix)])
    return bytes(prefix)


def prefix_decides(prefix: bytes) -> bool:
    """Whether a server's stream prefix is already a whole ClientHello, or none at all. A
    start that is no TLS handshake record (content type, version) names nothing, at once: the
    flow's decision is then the one for flows without a name."""
    if (prefix[:1] and prefix[0] != 0x16) or (prefix[1:2] and prefix[1] != 3) or (prefix[2:3] and prefix[2] > 4):
        return True
    if len(prefix) >= 5 and int.from_bytes(prefix[3:5], "big") > TLS_MAX_RECORD:
        return True  # a record longer than TLS allows: the server answers record_overflow
    if prefix[5:6] and prefix[5] != 1:
        return True  # the first handshake message is no ClientHello: the server ends it
    if len(prefix) >= 9 and 4 + int.from_bytes(prefix[6:9], "big") > GATEWAY_HELLO_BYTES:
        return True  # longer than the gateway reads: a flow without a name (the group's `unnamed`)
    try:
        client_hello_verdict(prefix)
    except NeedMoreBytes:
        return False
    except Malformed:
        return True
    return True


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(deliveries())
def test_any_segmentation_yields_the_true_name_or_evasion(case) -> None:
    hello, name, arrival, differs = case
    extractor = FlowExtractor(verify_checksums=True)
    extractor.extract(syn_segment(ISN), 1.0)
    held: dict[int, int] = {}
    flagged = Evasion.EVASION_NONE
    found = None
    conflict = False
    for offset, data in arrival:
        for position, byte in enumerate(data, offset):
            conflict |= held.setdefault(position, byte) != byte
        result = extractor.extract(segment(data, offset, ISN), 1.0)
        flagged |= extractor.last_evasion
        if result is not None:
            found = result.value
            break
        if not flagged and prefix_decides(first_copy_prefix(held)):
            break    # what the server holds decides (e.g. a differing first byte: no ClientHello)
    if conflict and not flagged & Evasion.EVASION_HOLES:
        assert flagged & Evasion.EVASION_OVERLAP, "two different copies of a byte went unnoticed"
    if found is not None and not flagged:
        try:
            served = client_hello_verdict(first_copy_prefix(held))[0]
        except NeedMoreBytes:
            # A length field (flipped by a differing copy) claims more bytes than came: the
            # server holds these same first copies and waits. The name they carry is the one
            # it would read, so the gateway may judge it early; never another name.
            served = name if found == name else None
        except Malformed:
            served = None
        assert found == served, "the gateway read another name than the server would"
        if not differs:
            assert found == name
    if not differs:
        assert found == name or flagged & (Evasion.EVASION_HOLES | Evasion.EVASION_UNFINISHED)
