"""QUIC v1/v2 client Initial decryption and CRYPTO reassembly up to the TLS ClientHello.

Initial packets are protected with keys anyone can derive from the client's Destination
Connection ID (RFC 9001 section 5.2, RFC 9369 section 3.3), so a middlebox can read them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

QUIC_V1: Final = 0x00000001
QUIC_V2: Final = 0x6B3343CF

MIN_CLIENT_INITIAL_DATAGRAM: Final = 1200  # RFC 9000 section 14.1
MAX_CONNECTION_ID_LENGTH: Final = 20
MAX_CRYPTO_BYTES: Final = 16 * 1024

_HEADER_FORM_LONG: Final = 0x80
_FIXED_BIT: Final = 0x40
_SAMPLE_OFFSET: Final = 4  # sample as if the packet number were 4 bytes long
_SAMPLE_LENGTH: Final = 16
_TLS_HANDSHAKE_HEADER_LENGTH: Final = 4
_TLS_CLIENT_HELLO: Final = 1


@dataclass(frozen=True, slots=True)
class _VersionParameters:
    initial_salt: bytes
    key_label: bytes
    iv_label: bytes
    hp_label: bytes
    initial_type: int
    retry_type: int


_VERSIONS: Final = {
    QUIC_V1: _VersionParameters(
        initial_salt=bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a"),
        key_label=b"quic key",
        iv_label=b"quic iv",
        hp_label=b"quic hp",
        initial_type=0b00,
        retry_type=0b11,
    ),
    QUIC_V2: _VersionParameters(
        initial_salt=bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9"),
        key_label=b"quicv2 key",
        iv_label=b"quicv2 iv",
        hp_label=b"quicv2 hp",
        initial_type=0b01,
        retry_type=0b00,
    ),
}


@dataclass(frozen=True, slots=True)
class InitialKeys:
    """Client Initial packet protection keys (AEAD_AES_128_GCM)."""

    key: bytes
    iv: bytes
    hp: bytes


def _hkdf_expand_label(secret: bytes, label: bytes, length: int) -> bytes:
    # One HMAC block is enough: every output here is at most 32 bytes (SHA-256).
    full_label = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes([len(full_label)]) + full_label + b"\x00"
    return hmac.digest(secret, info + b"\x01", hashlib.sha256)[:length]


def derive_client_initial_keys(version: int, destination_connection_id: bytes) -> InitialKeys:
    """Keys protecting client Initial packets sent to destination_connection_id."""
    parameters = _VERSIONS[version]
    initial_secret = hmac.digest(
        parameters.initial_salt, destination_connection_id, hashlib.sha256
    )
    client_secret = _hkdf_expand_label(initial_secret, b"client in", 32)
    return InitialKeys(
        key=_hkdf_expand_label(client_secret, parameters.key_label, 16),
        iv=_hkdf_expand_label(client_secret, parameters.iv_label, 12),
        hp=_hkdf_expand_label(client_secret, parameters.hp_label, 16),
    )


def looks_like_client_initial(datagram: bytes | memoryview) -> bool:
    """Cheap check without crypto: does the datagram start like a padded v1/v2 client Initial?"""
    if len(datagram) < MIN_CLIENT_INITIAL_DATAGRAM:
        return False
    first_byte = datagram[0]
    if first_byte & (_HEADER_FORM_LONG | _FIXED_BIT) != _HEADER_FORM_LONG | _FIXED_BIT:
        return False
    parameters = _VERSIONS.get(int.from_bytes(datagram[1:5], "big"))
    if parameters is None:
        return False
    return (first_byte >> 4) & 0b11 == parameters.initial_type and (
        datagram[5] <= MAX_CONNECTION_ID_LENGTH
    )


class _Truncated(Exception):
    """A field runs past the end of its packet or datagram."""


class _Malformed(Exception):
    """A field holds a value the protocol does not allow."""


def _read_varint(data: bytes, position: int, end: int) -> tuple[int, int]:
    if position >= end:
        raise _Truncated
    first_byte = data[position]
    length = 1 << (first_byte >> 6)
    if position + length > end:
        raise _Truncated
    value = first_byte & 0x3F
    for byte in data[position + 1 : position + length]:
        value = (value << 8) | byte
    return value, position + length


def _decode_packet_number(truncated: int, length: int, largest: int) -> int:
    """RFC 9000 appendix A.3; with largest = -1 the truncated number is the full one."""
    expected = largest + 1
    window = 1 << (8 * length)
    half_window = window // 2
    candidate = (expected & ~(window - 1)) | truncated
    if candidate <= expected - half_window and candidate < (1 << 62) - window:
        return candidate + window
    if candidate > expected + half_window and candidate >= window:
        return candidate - window
    return candidate


@dataclass(frozen=True, slots=True)
class _LongHeader:
    start: int
    version: int
    is_initial: bool
    destination_connection_id: bytes
    packet_number_offset: int
    end: int


def _parse_long_header(data: bytes, start: int) -> _LongHeader | None:
    """The v1/v2 long-header packet at start; None for anything else (short header, Retry)."""
    end_of_data = len(data)
    first_byte = data[start]
    if first_byte & (_HEADER_FORM_LONG | _FIXED_BIT) != _HEADER_FORM_LONG | _FIXED_BIT:
        return None
    if start + 6 > end_of_data:
        raise _Truncated
    version = int.from_bytes(data[start + 1 : start + 5], "big")
    parameters = _VERSIONS.get(version)
    if parameters is None:
        return None
    packet_type = (first_byte >> 4) & 0b11
    if packet_type == parameters.retry_type:
        return None

    position = start + 5
    dcid_length = data[position]
    if dcid_length > MAX_CONNECTION_ID_LENGTH:
        raise _Malformed
    position += 1
    destination_connection_id = data[position : position + dcid_length]
    position += dcid_length
    if position >= end_of_data:
        raise _Truncated
    scid_length = data[position]
    if scid_length > MAX_CONNECTION_ID_LENGTH:
        raise _Malformed
    position += 1 + scid_length
    is_initial = packet_type == parameters.initial_type
    if is_initial:
        token_length, position = _read_varint(data, position, end_of_data)
        position += token_length
    length, position = _read_varint(data, position, end_of_data)
    if position + length > end_of_data:
        raise _Truncated
    return _LongHeader(
        start=start,
        version=version,
        is_initial=is_initial,
        destination_connection_id=destination_connection_id,
        packet_number_offset=position,
        end=position + length,
    )


_FRAME_PADDING: Final = 0x00
_FRAME_PING: Final = 0x01
_FRAME_ACK: Final = 0x02
_FRAME_ACK_ECN: Final = 0x03
_FRAME_CRYPTO: Final = 0x06
_FRAME_CONNECTION_CLOSE: Final = 0x1C
_NOT_PADDING: Final = re.compile(b"[^\x00]")


def _crypto_frames(payload: bytes) -> list[tuple[int, bytes]]:
    """(offset, data) of each CRYPTO frame in an Initial payload, up to any CONNECTION_CLOSE."""
    crypto_frames: list[tuple[int, bytes]] = []
    end = len(payload)
    position = 0
    while position < end:
        # Frame types are varints; every type allowed in Initial fits in one byte and a
        # longer encoding of it is a protocol violation, so one byte decides.
        frame_type = payload[position]
        position += 1
        if frame_type == _FRAME_PADDING:
            next_frame = _NOT_PADDING.search(payload, position)
            position = end if next_frame is None else next_frame.start()
        elif frame_type == _FRAME_CRYPTO:
            offset, position = _read_varint(payload, position, end)
            length, position = _read_varint(payload, position, end)
            if position + length > end:
                raise _Truncated
            crypto_frames.append((offset, payload[position : position + length]))
            position += length
        elif frame_type in (_FRAME_ACK, _FRAME_ACK_ECN):
            _largest_acknowledged, position = _read_varint(payload, position, end)
            _ack_delay, position = _read_varint(payload, position, end)
            range_count, position = _read_varint(payload, position, end)
            if range_count > end - position:
                raise _Truncated
            # First ACK Range, then a Gap and an ACK Range Length per further range.
            for _ in range(1 + 2 * range_count):
                _value, position = _read_varint(payload, position, end)
            if frame_type == _FRAME_ACK_ECN:
                for _ in range(3):
                    _ecn_count, position = _read_varint(payload, position, end)
        elif frame_type == _FRAME_CONNECTION_CLOSE:
            break
        elif frame_type != _FRAME_PING:
            raise _Malformed
    return crypto_frames


_MAX_CRYPTO_RANGES: Final = 64


@dataclass(slots=True)
class _Reassembly:
    """Initial keys and received CRYPTO bytes of one connection still short of its ClientHello."""

    aead: AESGCM
    header_protection: CipherContext
    iv: bytes
    version: int
    largest_packet_number: int = -1
    crypto_data: bytearray = field(default_factory=bytearray)
    # Sorted, disjoint, non-adjacent [start, end) spans of crypto_data already received.
    received: list[tuple[int, int]] = field(default_factory=list)

    @classmethod
    def for_connection(cls, version: int, destination_connection_id: bytes) -> _Reassembly:
        keys = derive_client_initial_keys(version, destination_connection_id)
        return cls(
            aead=AESGCM(keys.key),
            header_protection=Cipher(algorithms.AES(keys.hp), modes.ECB()).encryptor(),
            iv=keys.iv,
            version=version,
        )

    def unprotect(self, data: bytes, header: _LongHeader) -> tuple[int, bytes]:
        """Packet number and payload; raises InvalidTag, _Truncated or _Malformed."""
        packet_number_offset = header.packet_number_offset
        sample_start = packet_number_offset + _SAMPLE_OFFSET
        if sample_start + _SAMPLE_LENGTH > header.end:
            raise _Truncated
        mask = self.header_protection.update(data[sample_start : sample_start + _SAMPLE_LENGTH])
        first_byte = data[header.start] ^ (mask[0] & 0x0F)
        packet_number_length = (first_byte & 0b11) + 1
        # The sample check above leaves at least 16 bytes, a whole AEAD tag, after the number.
        payload_start = packet_number_offset + packet_number_length
        truncated_packet_number = int.from_bytes(
            data[packet_number_offset:payload_start], "big"
        ) ^ int.from_bytes(mask[1 : 1 + packet_number_length], "big")
        associated_data = (
            bytes([first_byte])
            + data[header.start + 1 : packet_number_offset]
            + truncated_packet_number.to_bytes(packet_number_length, "big")
        )
        packet_number = _decode_packet_number(
            truncated_packet_number, packet_number_length, self.largest_packet_number
        )
        nonce = (int.from_bytes(self.iv, "big") ^ packet_number).to_bytes(len(self.iv), "big")
        payload = self.aead.decrypt(nonce, data[payload_start : header.end], associated_data)
        if first_byte & 0x0C:
            # Reserved bits must be zero once protection is off (RFC 9000 section 17.2):
            # the server drops such a packet, so its ClientHello must not count either.
            raise _Malformed
        return packet_number, payload

    def store(self, offset: int, data: bytes) -> None:
        """Keep data at offset; where it overlaps bytes already received, the first ones win."""
        end = offset + len(data)
        if end == offset:
            return
        if end > len(self.crypto_data):
            self.crypto_data.extend(bytes(end - len(self.crypto_data)))
        cursor = offset
        for start, stop in self.received:
            if stop <= cursor:
                continue
            if start >= end:
                break
            if start > cursor:
                self.crypto_data[cursor:start] = data[cursor - offset : start - offset]
            cursor = stop
            if cursor >= end:
                break
        if cursor < end:
            self.crypto_data[cursor:end] = data[cursor - offset :]

        merged: list[tuple[int, int]] = []
        new_start, new_end = offset, end
        for start, stop in self.received:
            if stop < new_start or start > new_end:
                merged.append((start, stop))
            else:
                new_start, new_end = min(start, new_start), max(stop, new_end)
        merged.append((new_start, new_end))
        merged.sort()
        self.received = merged

    def contiguous_length(self) -> int:
        """Bytes received without a gap from offset 0."""
        if self.received and self.received[0][0] == 0:
            return self.received[0][1]
        return 0


@dataclass(slots=True)
class _Connection:
    last_seen: float
    # None once the ClientHello was returned or the connection was dropped.
    reassembly: _Reassembly | None


_ConnectionKey = tuple[tuple[bytes, int], bytes]


class QuicInitialCollector:
    """Decrypts client Initial packets and returns each connection's ClientHello once."""

    def __init__(self, max_connections: int = 4096, timeout: float = 10.0) -> None:
        self.max_connections = max_connections
        self.timeout = timeout
        # Least recently seen first: expiry and eviction both take from the front.
        self._connections: OrderedDict[_ConnectionKey, _Connection] = OrderedDict()
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "datagrams",
                "initial_packets",
                "decrypt_failures",
                "truncated",
                "malformed",
                "client_hellos",
                "already_reported",
                "evicted",
                "expired",
                "oversize",
                "fragmented",
            ),
            0,
        )

    def feed(
        self, datagram: bytes | memoryview, client: tuple[bytes, int], now: float
    ) -> bytes | None:
        """Process one client-to-server UDP payload; the ClientHello message once complete."""
        self.stats["datagrams"] += 1
        self._expire(now)
        data = bytes(datagram)
        client_hello = None
        position = 0
        while position < len(data):
            try:
                header = _parse_long_header(data, position)
            except _Truncated:
                self.stats["truncated"] += 1
                break
            except _Malformed:
                self.stats["malformed"] += 1
                break
            if header is None:
                break
            if header.is_initial:
                completed = self._feed_initial(data, header, client, now)
                client_hello = client_hello or completed
            position = header.end
        return client_hello

    def _feed_initial(
        self, data: bytes, header: _LongHeader, client: tuple[bytes, int], now: float
    ) -> bytes | None:
        self.stats["initial_packets"] += 1
        key = (client, header.destination_connection_id)
        connection = self._connections.get(key)
        if connection is not None:
            connection.last_seen = now
            self._connections.move_to_end(key)
            if connection.reassembly is None:
                self.stats["already_reported"] += 1
                return None
            reassembly = connection.reassembly
            if reassembly.version != header.version:
                self.stats["malformed"] += 1
                return None
        else:
            reassembly = _Reassembly.for_connection(
                header.version, header.destination_connection_id
            )

        try:
            packet_number, payload = reassembly.unprotect(data, header)
            crypto_frames = _crypto_frames(payload)
        except InvalidTag:
            self.stats["decrypt_failures"] += 1
            return None
        except _Truncated:
            self.stats["truncated"] += 1
            return None
        except _Malformed:
            self.stats["malformed"] += 1
            return None

        if connection is None:
            # Only authenticated packets take a slot, so garbage cannot evict real clients.
            connection = _Connection(last_seen=now, reassembly=reassembly)
            self._connections[key] = connection
            if len(self._connections) > self.max_connections:
                self._connections.popitem(last=False)
                self.stats["evicted"] += 1
        reassembly.largest_packet_number = max(reassembly.largest_packet_number, packet_number)
        return self._reassemble(connection, reassembly, crypto_frames)

    def _reassemble(
        self,
        connection: _Connection,
        reassembly: _Reassembly,
        crypto_frames: list[tuple[int, bytes]],
    ) -> bytes | None:
        for offset, frame_data in crypto_frames:
            if offset + len(frame_data) > MAX_CRYPTO_BYTES:
                self.stats["oversize"] += 1
                connection.reassembly = None
                return None
            reassembly.store(offset, frame_data)
            if len(reassembly.received) > _MAX_CRYPTO_RANGES:
                # Every gap makes each store slower; no real client splits its Hello so finely.
                self.stats["fragmented"] += 1
                connection.reassembly = None
                return None

        available = reassembly.contiguous_length()
        if available < _TLS_HANDSHAKE_HEADER_LENGTH:
            return None
        crypto_data = reassembly.crypto_data
        if crypto_data[0] != _TLS_CLIENT_HELLO:
            self.stats["malformed"] += 1
            connection.reassembly = None
            return None
        message_length = _TLS_HANDSHAKE_HEADER_LENGTH + int.from_bytes(crypto_data[1:4], "big")
        if message_length > MAX_CRYPTO_BYTES:
            self.stats["oversize"] += 1
            connection.reassembly = None
            return None
        if available < message_length:
            return None
        self.stats["client_hellos"] += 1
        connection.reassembly = None
        return bytes(crypto_data[:message_length])

    def _expire(self, now: float) -> None:
        while self._connections:
            key, connection = next(iter(self._connections.items()))
            if now - connection.last_seen < self.timeout:
                return
            del self._connections[key]
            self.stats["expired"] += 1
