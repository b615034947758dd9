# cython: language_level=3
"""QUIC v1/v2 client Initials read in the fast path, up to the ClientHello's server name.

Initial packets are protected with keys anyone can derive from the Destination Connection ID
of the client's first Initial (RFC 9001 5.2, RFC 9369 3.3). A bounded table keyed by the UDP
5-tuple keeps, per connection being read, those keys and its CRYPTO bytes, so a ClientHello
spread over several Initials and datagrams is put together, also once the client has moved
to the server's connection ID; a new connection ID whose own keys open the packet (after a
Retry, or a new connection on the same 5-tuple) starts the connection over.

Crypto is OpenSSL's libcrypto (AES-128-GCM, AES-128-ECB, SHA-256) with algorithms fetched
and contexts made once; nothing here raises on input or holds the GIL per packet.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcmp, memcpy, memset

from edufilter._fastpath cimport (
    DECODE_OK,
    KIND_NONE,
    KIND_SNI,
    PARSE_DONE,
    decode_ip,
    parse_client_hello_message,
)
from edufilter.decode._libcrypto cimport (
    EVP_CIPHER_CTX_ctrl,
    EVP_CIPHER_CTX_free,
    EVP_CIPHER_CTX_new,
    EVP_CIPHER_CTX_set_padding,
    EVP_CIPHER_fetch,
    EVP_CIPHER_free,
    EVP_CTRL_GCM_SET_TAG,
    EVP_DecryptFinal_ex,
    EVP_DecryptInit_ex,
    EVP_DecryptUpdate,
    EVP_DigestFinal_ex,
    EVP_DigestInit_ex,
    EVP_DigestUpdate,
    EVP_EncryptInit_ex,
    EVP_EncryptUpdate,
    EVP_MD_CTX_free,
    EVP_MD_CTX_new,
    EVP_MD_fetch,
    EVP_MD_free,
)

cdef extern from "_hash.h":
    uint64_t ef_hash_flow(uint64_t fields, const uint8_t* src, const uint8_t* dst) nogil

cdef enum:
    QUIC_V1 = 0x00000001
    QUIC_V2 = 0x6B3343CF
    MIN_CLIENT_DATAGRAM = 1200     # RFC 9000 14.1: a server drops smaller datagrams with an Initial
    SAMPLE_OFFSET = 4              # RFC 9001 5.4.2: sampled as if the packet number had 4 bytes
    SAMPLE_LENGTH = 16
    AEAD_TAG = 16
    SLOT_PROBES = 8
    SHA256_BLOCK = 64
    SHA256_LENGTH = 32
    SALT_LENGTH = 20
    TLS_CLIENT_HELLO = 1
    FRAME_PADDING = 0x00
    FRAME_PING = 0x01
    FRAME_ACK = 0x02
    FRAME_ACK_ECN = 0x03
    FRAME_CRYPTO = 0x06
    FRAME_CONNECTION_CLOSE = 0x1C

# RFC 9001 5.2 and RFC 9369 3.3.1: the Initial salts.
cdef const char* V1_SALT = b"\x38\x76\x2c\xf7\xf5\x59\x34\xb3\x4d\x17\x9a\xe6\xa4\xc8\x0c\xad\xcc\xbb\x7f\x0a"
cdef const char* V2_SALT = b"\x0d\xed\xe3\xde\xf7\x00\xa6\xdb\x81\x93\x81\xbe\x6e\x26\x9d\xcb\xf9\xbd\x2e\xd9"


cdef inline uint32_t be32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline bint read_varint(const uint8_t* data, Py_ssize_t end, Py_ssize_t* position,
                             uint64_t* value) noexcept nogil:
    """A variable-length integer (RFC 9000 16); False when it runs past end."""
    cdef Py_ssize_t at = position[0], length, i
    cdef uint64_t result
    if at >= end:
        return False
    length = <Py_ssize_t>1 << (data[at] >> 6)
    if end - at < length:
        return False
    result = data[at] & 0x3F
    for i in range(1, length):
        result = (result << 8) | data[at + i]
    value[0] = result
    position[0] = at + length
    return True


cdef bint parse_long_header(const uint8_t* data, Py_ssize_t length, Py_ssize_t start,
                            LongHeader* header) noexcept nogil:
    """The v1/v2 long-header packet at start, up to its packet number (RFC 9000 17.2); False
    for a short header, another version, a Retry, or a header that does not fit."""
    cdef uint8_t first, packet_type, initial_type, retry_type, scid_length
    cdef Py_ssize_t position
    cdef uint64_t token_length, payload_length
    if length - start < 7:
        return False
    first = data[start]
    if first & 0xC0 != 0xC0:
        return False
    header.version = be32(data + start + 1)
    if header.version == QUIC_V1:
        initial_type, retry_type = 0, 3
    elif header.version == QUIC_V2:
        initial_type, retry_type = 1, 0        # RFC 9369 3.2
    else:
        return False
    packet_type = (first >> 4) & 0x03
    if packet_type == retry_type:
        return False
    header.dcid_length = data[start + 5]
    if header.dcid_length > QUIC_MAX_CID:
        return False
    position = start + 6
    header.dcid = data + position
    position += header.dcid_length
    if position >= length:
        return False
    scid_length = data[position]
    if scid_length > QUIC_MAX_CID:
        return False
    position += 1 + scid_length
    header.initial = packet_type == initial_type
    if header.initial:
        if not read_varint(data, length, &position, &token_length) or token_length > <uint64_t>(length - position):
            return False
        position += <Py_ssize_t>token_length
    if not read_varint(data, length, &position, &payload_length) or payload_length > <uint64_t>(length - position):
        return False
    header.start = start
    header.packet_number_offset = position
    header.end = position + <Py_ssize_t>payload_length
    return True


cdef inline int64_t decode_packet_number(int64_t largest, uint64_t truncated, int bits) noexcept nogil:
    """RFC 9000 A.3; with largest -1 the truncated number is the whole one."""
    cdef int64_t expected = largest + 1
    cdef int64_t window = <int64_t>1 << bits
    cdef int64_t half_window = window // 2
    cdef int64_t candidate = (expected & ~(window - 1)) | <int64_t>truncated
    if candidate <= expected - half_window and candidate < (<int64_t>1 << 62) - window:
        return candidate + window
    if candidate > expected + half_window and candidate >= window:
        return candidate - window
    return candidate


cdef inline uint64_t hash_flow_key(const FlowKey* key) noexcept nogil:
    return ef_hash_flow(<uint64_t>key.ip_version | (<uint64_t>key.sport << 16) | (<uint64_t>key.dport << 32),
                        key.src, key.dst)


cdef class QuicFlows:
    """One worker's QUIC connections being read: max_flows table slots (rounded up to a power
    of two), at most max_pending holding CRYPTO bytes; a connection quiet for timeout seconds
    is forgotten."""

    def __cinit__(self, Py_ssize_t max_flows=4096, Py_ssize_t max_pending=1024, double timeout=10.0):
        cdef Py_ssize_t capacity = SLOT_PROBES
        if max_flows < 1 or max_pending < 1 or timeout <= 0:
            raise ValueError("QuicFlows limits must be positive")
        while capacity < max_flows:
            capacity <<= 1
        self.slots = <QuicFlow*>calloc(capacity, sizeof(QuicFlow))
        self.staging = <CryptoStream*>malloc(sizeof(CryptoStream))
        self.plain = <uint8_t*>malloc(65536)
        if self.slots == NULL or self.staging == NULL or self.plain == NULL:
            raise MemoryError()
        self.slot_mask = <uint32_t>(capacity - 1)
        self.max_pending = max_pending
        self.timeout = timeout
        self.aes_gcm = EVP_CIPHER_fetch(NULL, b"AES-128-GCM", NULL)
        self.aes_ecb = EVP_CIPHER_fetch(NULL, b"AES-128-ECB", NULL)
        self.sha256 = EVP_MD_fetch(NULL, b"SHA256", NULL)
        self.packet_cipher = EVP_CIPHER_CTX_new()
        self.header_cipher = EVP_CIPHER_CTX_new()
        self.digest = EVP_MD_CTX_new()
        if self.aes_gcm == NULL or self.aes_ecb == NULL or self.sha256 == NULL or self.packet_cipher == NULL \
                or self.header_cipher == NULL or self.digest == NULL:
            raise MemoryError("libcrypto: AES-128-GCM, AES-128-ECB or SHA256 unavailable")
        # The algorithms are set once; each packet only sets a key (and a nonce).
        if EVP_DecryptInit_ex(self.packet_cipher, self.aes_gcm, NULL, NULL, NULL) != 1 or \
                EVP_EncryptInit_ex(self.header_cipher, self.aes_ecb, NULL, NULL, NULL) != 1 or \
                EVP_CIPHER_CTX_set_padding(self.header_cipher, 0) != 1:
            raise MemoryError("libcrypto: cipher setup failed")

    def __dealloc__(self):
        cdef uint32_t i
        if self.slots != NULL:
            for i in range(self.slot_mask + 1):
                free(self.slots[i].crypto)
            free(self.slots)
        free(self.staging)
        free(self.plain)
        EVP_CIPHER_CTX_free(self.packet_cipher)
        EVP_CIPHER_CTX_free(self.header_cipher)
        EVP_MD_CTX_free(self.digest)
        EVP_CIPHER_free(self.aes_gcm)
        EVP_CIPHER_free(self.aes_ecb)
        EVP_MD_free(self.sha256)

    # ---- keys (RFC 9001 5.2, RFC 8446 7.1, RFC 5869)

    cdef void hmac_sha256(self, const uint8_t* key, Py_ssize_t key_length, const uint8_t* message,
                          Py_ssize_t message_length, uint8_t* out) noexcept nogil:
        """HMAC-SHA256 with a key of at most one block (every key here is 20 or 32 bytes)."""
        cdef uint8_t pad[SHA256_BLOCK]
        cdef uint8_t inner[SHA256_LENGTH]
        cdef unsigned int length
        cdef int i
        memset(pad, 0x36, SHA256_BLOCK)
        for i in range(key_length):
            pad[i] ^= key[i]
        EVP_DigestInit_ex(self.digest, self.sha256, NULL)
        EVP_DigestUpdate(self.digest, pad, SHA256_BLOCK)
        EVP_DigestUpdate(self.digest, message, message_length)
        EVP_DigestFinal_ex(self.digest, inner, &length)
        for i in range(SHA256_BLOCK):
            pad[i] ^= 0x36 ^ 0x5C
        EVP_DigestInit_ex(self.digest, self.sha256, NULL)
        EVP_DigestUpdate(self.digest, pad, SHA256_BLOCK)
        EVP_DigestUpdate(self.digest, inner, SHA256_LENGTH)
        EVP_DigestFinal_ex(self.digest, out, &length)

    cdef void expand_label(self, const uint8_t* secret, const char* label, int label_length,
                           uint8_t* out, int out_length) noexcept nogil:
        """HKDF-Expand-Label with an empty context; one HMAC block, as every output is <= 32 bytes."""
        cdef uint8_t info[2 + 1 + 6 + 32 + 1 + 1]
        cdef uint8_t block[SHA256_LENGTH]
        cdef int n = 0
        info[0] = 0
        info[1] = <uint8_t>out_length
        info[2] = <uint8_t>(6 + label_length)
        memcpy(info + 3, b"tls13 ", 6)
        memcpy(info + 9, label, label_length)
        n = 9 + label_length
        info[n] = 0          # context length
        info[n + 1] = 1      # the HKDF-Expand block counter
        self.hmac_sha256(secret, SHA256_LENGTH, info, n + 2, block)
        memcpy(out, block, out_length)

    cdef void derive_keys(self, uint32_t version, const uint8_t* dcid, int dcid_length,
                          InitialKeys* keys) noexcept nogil:
        """The client's Initial keys for a connection whose first Initial went to dcid."""
        cdef uint8_t initial_secret[SHA256_LENGTH]
        cdef uint8_t client_secret[SHA256_LENGTH]
        self.hmac_sha256(<const uint8_t*>(V1_SALT if version == QUIC_V1 else V2_SALT), SALT_LENGTH, dcid, dcid_length,
                         initial_secret)
        self.expand_label(initial_secret, b"client in", 9, client_secret, SHA256_LENGTH)
        if version == QUIC_V1:
            self.expand_label(client_secret, b"quic key", 8, keys.key, 16)
            self.expand_label(client_secret, b"quic iv", 7, keys.iv, 12)
            self.expand_label(client_secret, b"quic hp", 7, keys.hp, 16)
        else:
            self.expand_label(client_secret, b"quicv2 key", 10, keys.key, 16)
            self.expand_label(client_secret, b"quicv2 iv", 9, keys.iv, 12)
            self.expand_label(client_secret, b"quicv2 hp", 9, keys.hp, 16)

    # ---- packet protection (RFC 9001 5.3, 5.4)

    cdef bint unprotect(self, const uint8_t* data, const LongHeader* header, const InitialKeys* keys,
                        int64_t largest, int64_t* packet_number) noexcept nogil:
        """Decrypts the packet into self.plain; False when it does not authenticate with keys."""
        cdef Py_ssize_t sample_at = header.packet_number_offset + SAMPLE_OFFSET, payload_start, cipher_length
        cdef uint8_t mask[32]
        cdef uint8_t number_bytes[4]
        cdef uint8_t nonce[12]
        cdef uint8_t first
        cdef uint64_t truncated = 0
        cdef int64_t number
        cdef int number_length, i, written = 0, final_written = 0
        if sample_at + SAMPLE_LENGTH > header.end:
            return False
        if EVP_EncryptInit_ex(self.header_cipher, NULL, NULL, keys.hp, NULL) != 1 or \
                EVP_EncryptUpdate(self.header_cipher, mask, &written, data + sample_at, SAMPLE_LENGTH) != 1:
            return False
        first = data[header.start] ^ (mask[0] & 0x0F)
        number_length = (first & 0x03) + 1
        for i in range(number_length):
            number_bytes[i] = data[header.packet_number_offset + i] ^ mask[1 + i]
            truncated = (truncated << 8) | number_bytes[i]
        number = decode_packet_number(largest, truncated, 8 * number_length)
        memcpy(nonce, keys.iv, 12)
        for i in range(8):
            nonce[4 + i] ^= <uint8_t>(number >> (56 - 8 * i))
        payload_start = header.packet_number_offset + number_length
        cipher_length = header.end - AEAD_TAG - payload_start
        if EVP_DecryptInit_ex(self.packet_cipher, NULL, NULL, keys.key, nonce) != 1:
            return False
        # The associated data is the unprotected header, given in three pieces.
        EVP_DecryptUpdate(self.packet_cipher, NULL, &written, &first, 1)
        EVP_DecryptUpdate(self.packet_cipher, NULL, &written, data + header.start + 1,
                          <int>(header.packet_number_offset - header.start - 1))
        EVP_DecryptUpdate(self.packet_cipher, NULL, &written, number_bytes, number_length)
        written = 0
        if cipher_length > 0 and EVP_DecryptUpdate(self.packet_cipher, self.plain, &written,
                                                   data + payload_start, <int>cipher_length) != 1:
            return False
        EVP_CIPHER_CTX_ctrl(self.packet_cipher, EVP_CTRL_GCM_SET_TAG, AEAD_TAG,
                            <void*>(data + header.end - AEAD_TAG))
        if EVP_DecryptFinal_ex(self.packet_cipher, self.plain + written, &final_written) != 1:
            self.counters.decrypt_failures += 1
            return False
        if first & 0x0C:
            # Reserved bits must be zero once protection is off (RFC 9000 17.2): the server
            # closes such a connection, so its bytes must not decide anything.
            self.counters.malformed += 1
            return False
        self.plain_length = cipher_length
        packet_number[0] = number
        return True

    # ---- frames (RFC 9000 19, 17.2.2: what an Initial may carry)

    cdef bint collect_crypto_frames(self) noexcept nogil:
        """The CRYPTO frames of the decrypted payload, up to any CONNECTION_CLOSE; False when
        a frame is truncated or not allowed in an Initial (the server drops the packet)."""
        cdef const uint8_t* payload = self.plain
        cdef Py_ssize_t end = self.plain_length, position = 0
        cdef uint64_t frame_type, offset, length, ranges, value, k
        self.frame_count = 0
        while position < end:
            frame_type = payload[position]
            position += 1
            if frame_type == FRAME_PADDING or frame_type == FRAME_PING:
                continue
            if frame_type == FRAME_CRYPTO:
                if not read_varint(payload, end, &position, &offset) or \
                        not read_varint(payload, end, &position, &length) or length > <uint64_t>(end - position):
                    return False
                if self.frame_count == QUIC_MAX_FRAMES:
                    return False
                self.frame_offset[self.frame_count] = offset
                self.frame_data[self.frame_count] = payload + position
                self.frame_length[self.frame_count] = <uint32_t>length
                self.frame_count += 1
                position += <Py_ssize_t>length
            elif frame_type == FRAME_ACK or frame_type == FRAME_ACK_ECN:
                # Largest Acknowledged, ACK Delay, ACK Range Count, First ACK Range, then a Gap and
                # a Range per further range, then three ECN counts for ACK_ECN.
                for k in range(3):
                    if not read_varint(payload, end, &position, &value):
                        return False
                ranges = value
                if ranges > <uint64_t>(end - position):
                    return False
                for k in range(1 + 2 * ranges + (3 if frame_type == FRAME_ACK_ECN else 0)):
                    if not read_varint(payload, end, &position, &value):
                        return False
            elif frame_type == FRAME_CONNECTION_CLOSE:
                break
            else:
                return False
        return True

    # ---- CRYPTO reassembly

    cdef bint store_crypto(self, CryptoStream* stream) noexcept nogil:
        """Adds the collected frames to stream, the first copy of a byte winning (as the TLS
        stack keeps it); False when they reach past QUIC_MAX_CRYPTO or leave too many holes."""
        cdef int f, i, j, count
        cdef uint64_t start, end, cursor
        cdef const uint8_t* data
        for f in range(self.frame_count):
            start = self.frame_offset[f]
            end = start + self.frame_length[f]
            data = self.frame_data[f]
            if end > QUIC_MAX_CRYPTO:
                return False
            if end == start:
                continue
            count = stream.interval_count
            cursor = start
            for i in range(count):
                if stream.interval_end[i] <= cursor:
                    continue
                if stream.interval_start[i] >= end:
                    break
                if stream.interval_start[i] > cursor:
                    memcpy(stream.data + cursor, data + (cursor - start), stream.interval_start[i] - cursor)
                cursor = max(cursor, <uint64_t>stream.interval_end[i])
            if cursor < end:
                memcpy(stream.data + cursor, data + (cursor - start), end - cursor)
            i = 0
            while i < count and stream.interval_end[i] < start:
                i += 1
            j = i
            while j < count and stream.interval_start[j] <= end:
                start = min(start, <uint64_t>stream.interval_start[j])
                end = max(end, <uint64_t>stream.interval_end[j])
                j += 1
            if j == i:
                if count == QUIC_MAX_CRYPTO_INTERVALS:
                    return False
                memmove_intervals(stream, i + 1, i, count - i)
                count += 1
            elif j > i + 1:
                memmove_intervals(stream, i + 1, j, count - j)
                count -= j - i - 1
            stream.interval_start[i] = <uint32_t>start
            stream.interval_end[i] = <uint32_t>end
            stream.interval_count = count
        return True

    cdef QuicStatus client_hello(self, CryptoStream* stream, NameResult* result) noexcept nogil:
        """NAME or NO_NAME once the stream holds a whole ClientHello, else PENDING."""
        cdef uint32_t contiguous, message_length
        if stream.interval_count == 0 or stream.interval_start[0] != 0 or stream.interval_end[0] < 4:
            return QUIC_PENDING
        contiguous = stream.interval_end[0]
        if stream.data[0] != TLS_CLIENT_HELLO:
            return QUIC_NO_NAME
        message_length = 4 + ((<uint32_t>stream.data[1] << 16) | (<uint32_t>stream.data[2] << 8) | stream.data[3])
        if message_length > QUIC_MAX_CRYPTO:
            return QUIC_NO_NAME
        if contiguous < message_length:
            return QUIC_PENDING
        if parse_client_hello_message(stream.data, message_length, result) == PARSE_DONE and \
                result.kind == KIND_SNI:
            self.counters.client_hellos += 1
            return QUIC_NAME
        result.kind = KIND_NONE
        return QUIC_NO_NAME

    # ---- the table: SLOT_PROBES-way buckets, so no tombstones are needed

    cdef void release(self, QuicFlow* flow) noexcept nogil:
        if flow.crypto != NULL:
            free(flow.crypto)
            flow.crypto = NULL
            self.pending -= 1
        flow.hash = 0

    cdef QuicFlow* lookup(self, const FlowKey* key, uint64_t hash, double now) noexcept nogil:
        cdef QuicFlow* flow
        cdef int i
        for i in range(SLOT_PROBES):
            flow = &self.slots[(hash + i) & self.slot_mask]
            if flow.hash == hash and memcmp(&flow.key, key, sizeof(FlowKey)) == 0:
                if now - flow.last_seen > self.timeout:
                    self.release(flow)
                    self.counters.flows_expired += 1
                    return NULL
                flow.last_seen = now
                return flow
        return NULL

    cdef void sweep(self, double now) noexcept nogil:
        """Frees connections gone quiet; run only when the CRYPTO pool is full."""
        cdef uint32_t i
        if now - self.last_sweep < 1.0:
            return
        self.last_sweep = now
        for i in range(self.slot_mask + 1):
            if self.slots[i].hash != 0 and now - self.slots[i].last_seen > self.timeout:
                self.release(&self.slots[i])
                self.counters.flows_expired += 1

    cdef QuicFlow* claim(self, const FlowKey* key, uint64_t hash, double now) noexcept nogil:
        """A slot holding a copy of the staged CRYPTO bytes, or NULL when the pool is full."""
        cdef QuicFlow* flow
        cdef QuicFlow* victim = NULL
        cdef CryptoStream* crypto
        cdef int i
        if self.pending >= self.max_pending:
            self.sweep(now)
            if self.pending >= self.max_pending:
                self.counters.pool_full += 1
                return NULL
        crypto = <CryptoStream*>malloc(sizeof(CryptoStream))
        if crypto == NULL:
            self.counters.pool_full += 1
            return NULL
        for i in range(SLOT_PROBES):
            flow = &self.slots[(hash + i) & self.slot_mask]
            if flow.hash == 0:
                victim = flow
                break
            if now - flow.last_seen > self.timeout:
                self.counters.flows_expired += 1
                victim = flow
                break
            if victim == NULL or flow.last_seen < victim.last_seen:
                victim = flow
        else:
            self.counters.flows_evicted += 1
        self.release(victim)
        crypto.interval_count = self.staging.interval_count
        memcpy(crypto.interval_start, self.staging.interval_start, sizeof(crypto.interval_start))
        memcpy(crypto.interval_end, self.staging.interval_end, sizeof(crypto.interval_end))
        if crypto.interval_count:
            memcpy(crypto.data, self.staging.data, crypto.interval_end[crypto.interval_count - 1])
        victim.crypto = crypto
        victim.hash = hash
        victim.key = key[0]
        victim.last_seen = now
        self.pending += 1
        self.counters.flows_tracked += 1
        return victim

    # ---- per datagram

    cdef QuicStatus feed(self, const Packet* packet, double now, NameResult* result) noexcept nogil:
        """Reads one client-to-server UDP datagram: its Initials (coalesced packets are walked
        by their Length), their CRYPTO frames, and the ClientHello once it is whole."""
        cdef const uint8_t* data = packet.payload
        cdef Py_ssize_t length = packet.payload_len, position = 0
        cdef FlowKey key
        cdef uint64_t hash
        cdef QuicFlow* flow
        cdef LongHeader header
        cdef InitialKeys keys
        cdef InitialKeys* opened_with
        cdef CryptoStream* stream
        cdef int64_t number
        cdef bint fresh
        cdef QuicStatus status
        result.kind = KIND_NONE
        result.ech = 0
        result.invalid_name = 0
        result.name_len = 0
        self.counters.datagrams += 1
        memset(&key, 0, sizeof(FlowKey))
        key.ip_version = packet.ip_version
        memcpy(key.src, packet.src, 16)
        memcpy(key.dst, packet.dst, 16)
        key.sport = packet.sport
        key.dport = packet.dport
        hash = hash_flow_key(&key)
        flow = self.lookup(&key, hash, now)
        while parse_long_header(data, length, position, &header):
            position = header.end
            if not header.initial:
                continue                   # 0-RTT or Handshake: nothing a middlebox can read
            if length < MIN_CLIENT_DATAGRAM:
                self.counters.small_datagrams += 1
                break
            self.counters.initials += 1
            # A known connection's keys first; else the keys of this packet's own connection
            # ID: a new connection, or the client's next Initial after a Retry (RFC 9000 17.2.5).
            fresh = True
            if flow != NULL and flow.version == header.version and \
                    self.unprotect(data, &header, &flow.keys, flow.largest_packet_number, &number):
                fresh = False
            elif flow != NULL and flow.version == header.version and header.dcid_length == flow.keys_dcid_length \
                    and memcmp(header.dcid, flow.keys_dcid, header.dcid_length) == 0:
                continue                   # these keys were just tried
            else:
                self.derive_keys(header.version, header.dcid, header.dcid_length, &keys)
                if not self.unprotect(data, &header, &keys, -1, &number):
                    continue
            if not self.collect_crypto_frames():
                self.counters.malformed += 1
                continue
            self.counters.decrypted += 1
            if fresh and flow != NULL:
                self.counters.rekeyed += 1
                flow.crypto.interval_count = 0
            if flow != NULL:
                stream = flow.crypto
            else:
                stream = self.staging
                stream.interval_count = 0
            if self.store_crypto(stream):
                status = self.client_hello(stream, result)
            else:
                status = QUIC_NO_NAME
            if status != QUIC_PENDING:
                if status == QUIC_NO_NAME:
                    self.counters.no_name += 1
                if flow != NULL:
                    self.release(flow)
                return status
            if flow == NULL:
                flow = self.claim(&key, hash, now)
                if flow == NULL:
                    return QUIC_PENDING
                fresh = True
            if fresh:
                flow.version = header.version
                flow.keys = keys
                flow.keys_dcid_length = header.dcid_length
                memcpy(flow.keys_dcid, header.dcid, header.dcid_length)
                flow.largest_packet_number = number
            elif number > flow.largest_packet_number:
                flow.largest_packet_number = number
        return QUIC_PENDING if flow != NULL else QUIC_UNREADABLE

    cdef void forget(self, const Packet* packet) noexcept nogil:
        """Drops the state of the packet's connection (its flow was decided without a name)."""
        cdef FlowKey key
        cdef QuicFlow* flow
        memset(&key, 0, sizeof(FlowKey))
        key.ip_version = packet.ip_version
        memcpy(key.src, packet.src, 16)
        memcpy(key.dst, packet.dst, 16)
        key.sport = packet.sport
        key.dport = packet.dport
        flow = self.lookup(&key, hash_flow_key(&key), 0.0)
        if flow != NULL:
            self.release(flow)

    # ---- Python surface

    def read(self, bytes packet, double now):
        """(QuicStatus, server name or None, has ECH) for one IP packet carrying a UDP datagram
        from the client; QUIC_UNREADABLE for anything that does not decode as one."""
        cdef Packet decoded
        cdef NameResult result
        cdef QuicStatus status
        memset(&result, 0, sizeof(NameResult))
        if decode_ip(<const uint8_t*>PyBytes_AS_STRING(packet), PyBytes_GET_SIZE(packet), &decoded) != DECODE_OK \
                or decoded.protocol != 17:
            return QUIC_UNREADABLE, None, False
        with nogil:
            status = self.feed(&decoded, now, &result)
        name = result.name[:result.name_len].decode("ascii") if status == QUIC_NAME else None
        return QuicStatus(status), name, bool(result.ech)

    def initial_keys(self, int version, bytes dcid):
        """(key, iv, hp) protecting a client's Initials sent to dcid (for tests and tools)."""
        cdef InitialKeys keys
        if version not in (QUIC_V1, QUIC_V2) or len(dcid) > QUIC_MAX_CID:
            raise ValueError("QUIC v1 or v2, and a connection ID of at most 20 bytes")
        self.derive_keys(version, <const uint8_t*>PyBytes_AS_STRING(dcid), len(dcid), &keys)
        return (<char*>keys.key)[:16], (<char*>keys.iv)[:12], (<char*>keys.hp)[:16]

    @property
    def stats(self):
        """Counters since creation, and the connections holding CRYPTO bytes now."""
        counters = dict(self.counters)
        counters["pending"] = self.pending
        return counters


cdef inline void memmove_intervals(CryptoStream* stream, int to, int source, int count) noexcept nogil:
    cdef int k
    if count <= 0:
        return
    if to > source:
        for k in range(count - 1, -1, -1):
            stream.interval_start[to + k] = stream.interval_start[source + k]
            stream.interval_end[to + k] = stream.interval_end[source + k]
    else:
        for k in range(count):
            stream.interval_start[to + k] = stream.interval_start[source + k]
            stream.interval_end[to + k] = stream.interval_end[source + k]
