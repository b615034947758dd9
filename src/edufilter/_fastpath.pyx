# cython: language_level=3
"""The fast path: decode an IP packet as NFQUEUE delivers it and extract the name a
school policy needs (DNS query name, TLS SNI, HTTP Host, or a QUIC Initial to decrypt).

Every read is checked against the buffer's end; bad input is counted, never raised.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcmp, memcpy, memmove, memset

from edufilter._wire cimport DNS_PORT, PROTO_TCP, PROTO_UDP, be16, be24, be32

cdef extern from *:
    """
    #define EF_LIKELY(x) __builtin_expect(!!(x), 1)
    #define EF_UNLIKELY(x) __builtin_expect(!!(x), 0)
    """
    bint EF_LIKELY(bint) nogil
    bint EF_UNLIKELY(bint) nogil

cdef extern from "_hash.h":
    uint64_t ef_hash_flow(uint64_t fields, const uint8_t* src, const uint8_t* dst) nogil

# TCP flags (RFC 9293)
cdef enum:
    TCP_FIN = 0x01
    TCP_SYN = 0x02
    TCP_RST = 0x04
    TCP_ACK = 0x10
    TCP_URG = 0x20
    TCP_OPTION_END = 0
    TCP_OPTION_NOP = 1
    TCP_OPTION_MD5 = 19                # RFC 2385: a receiver without the key drops the segment
    # A segment this far from the stream start (before it, or past the reassembly buffer) is
    # outside any window the server would accept for a handshake's first bytes.
    SEQUENCE_WINDOW = 1 << 16

cdef enum:
    TLS_CONTENT_HANDSHAKE = 22
    TLS_HANDSHAKE_CLIENT_HELLO = 1
    TLS_EXT_SERVER_NAME = 0x0000
    TLS_EXT_ENCRYPTED_CLIENT_HELLO = 0xFE0D
    TLS_MAX_RECORD = 16384 + 2048      # RFC 8446 5.2: plaintext 2^14, ciphertext +256
    QUIC_V1 = 0x00000001
    QUIC_V2 = 0x6B3343CF
    QUIC_MIN_CLIENT_DATAGRAM = 1200    # RFC 9000 14.1
    HTTP_MAX_METHOD = 24
    MAX_IPV6_EXTENSION_HEADERS = 10
    DNS_MAX_POINTER_HOPS = 16
    SLOT_PROBES = 8

cdef enum FlowState:
    FLOW_EMPTY = 0
    FLOW_SYN_SEEN = 1     # client SYN seen; no stream bytes yet
    FLOW_BUFFERING = 2    # a stream prefix is being reassembled
    FLOW_DONE = 3         # this flow's name (or its absence) has been settled

cdef inline void store_ipv4_as_words(uint8_t* out, const uint8_t* address) noexcept nogil:
    """A 16-byte address field holding an IPv4 address and zeros, written as two words."""
    cdef uint8_t word[8]
    memset(word, 0, 8)
    memcpy(word, address, 4)    # in a register: one 8-byte store below, on any byte order
    memcpy(out, word, 8)
    memset(word, 0, 4)
    memcpy(out + 8, word, 8)


# ---------------------------------------------------------------- names

cdef int normalise_name_into(const uint8_t* raw, Py_ssize_t length, char* out) noexcept nogil:
    """Lowercase a host name into out (NUL-terminated); -1 when it is not a valid host name.

    Accepts letters, digits, '-' and '_' (common in real DNS), labels of 1-63 bytes, 253 in
    all. An all-digit last label is an IP literal, not a name (RFC 3696 2).
    """
    cdef Py_ssize_t i, label_length = 0
    cdef bint label_all_digits = True
    cdef uint8_t c
    if length > 0 and raw[length - 1] == b'.':
        length -= 1
    if length <= 0 or length > 253:
        return -1
    for i in range(length):
        c = raw[i]
        if c == b'.':
            if label_length == 0:
                return -1
            label_length = 0
            label_all_digits = True
            out[i] = b'.'
            continue
        if b'A' <= c <= b'Z':
            c += 32
            label_all_digits = False
        elif (b'a' <= c <= b'z') or c == b'-' or c == b'_':
            label_all_digits = False
        elif not (b'0' <= c <= b'9'):
            return -1
        label_length += 1
        if label_length > 63:
            return -1
        out[i] = <char>c
    if label_length == 0 or label_all_digits:
        return -1
    out[length] = 0
    return <int>length


cdef inline bint is_address_literal(const uint8_t* raw, Py_ssize_t length) noexcept nogil:
    """Digits and dots ending in a digit (an IPv4 literal, maybe with a trailing dot): an
    address where a name could stand, which names nothing rather than hiding a name."""
    cdef Py_ssize_t i
    if length > 0 and raw[length - 1] == b'.':
        length -= 1
    if length <= 0 or not (b'0' <= raw[length - 1] <= b'9'):
        return False
    for i in range(length):
        if not ((b'0' <= raw[i] <= b'9') or raw[i] == b'.'):
            return False
    return True


cdef inline ParseStatus set_name(NameResult* result, NameKind kind, const uint8_t* raw,
                                 Py_ssize_t length) noexcept nogil:
    result.name_len = normalise_name_into(raw, length, result.name)
    if result.name_len < 0:
        # An address literal names nothing; anything else (UTF-8 rather than its punycode
        # form, a NUL, an over-long name) is a name the gateway cannot read.
        result.invalid_name = 0 if is_address_literal(raw, length) else 1
        result.name_len = 0
        result.kind = KIND_NONE
    else:
        result.kind = kind
    return PARSE_DONE


cdef void add_name(NameResult* result, NameKind kind, const uint8_t* raw, Py_ssize_t length,
                   bint first) noexcept nogil:
    """The first name of a flow, or a further one: a different further name is a conflict
    (alt_name), an unreadable one makes the flow's name unreadable."""
    cdef int n
    if first:
        set_name(result, kind, raw, length)
        return
    n = normalise_name_into(raw, length, result.alt_name)
    if n < 0:
        result.invalid_name = 1
        return
    if result.kind == kind and n == result.name_len and memcmp(result.alt_name, result.name, n) == 0:
        return
    if result.kind != kind:               # the first name was unreadable: this one stands in
        memcpy(result.name, result.alt_name, n + 1)
        result.name_len = n
        result.kind = kind
        return
    result.conflict = 1
    result.alt_name_len = n


# ---------------------------------------------------------------- IP and transport

cdef DecodeStatus decode_ip(const uint8_t* data, Py_ssize_t length, Packet* packet) noexcept nogil:
    """Fill packet from a buffer starting at the IPv4/IPv6 header."""
    cdef Py_ssize_t header_length, total_length, offset, l4_length, ext_length
    cdef uint16_t fragment_field
    cdef uint8_t next_header
    cdef int extension_count = 0
    packet.first_fragment = 0
    packet.tcp_flags = 0
    packet.seq = 0
    packet.transport = NULL
    packet.transport_len = 0
    packet.payload = NULL
    packet.payload_len = 0
    if length < 1:
        return DECODE_TRUNCATED
    packet.ip_version = data[0] >> 4
    if packet.ip_version == 4:
        if length < 20:
            return DECODE_TRUNCATED
        header_length = (data[0] & 0x0F) * 4
        total_length = be16(data + 2)
        if header_length < 20 or total_length < header_length:
            return DECODE_MALFORMED
        if total_length > length:
            return DECODE_TRUNCATED
        # As two 8-byte words each, the widths the flow keys read them back with: a wider
        # read over narrower writes just made would wait for them (no store forwarding).
        store_ipv4_as_words(packet.src, data + 12)
        store_ipv4_as_words(packet.dst, data + 16)
        packet.hop_limit = data[8]
        packet.protocol = data[9]
        fragment_field = be16(data + 6)
        if fragment_field & 0x1FFF:
            return DECODE_FRAGMENT
        if fragment_field & 0x2000:
            packet.first_fragment = 1
        offset = header_length
        l4_length = total_length - header_length   # drops Ethernet padding after the datagram
    elif packet.ip_version == 6:
        if length < 40:
            return DECODE_TRUNCATED
        total_length = 40 + be16(data + 4)
        if total_length > length:
            return DECODE_TRUNCATED
        memcpy(packet.src, data + 8, 16)
        memcpy(packet.dst, data + 24, 16)
        packet.hop_limit = data[7]
        next_header = data[6]
        offset = 40
        # Walk the extension-header chain (RFC 8200 4) to the transport header.
        while True:
            if next_header == 0 or next_header == 43 or next_header == 60 \
                    or next_header == 135 or next_header == 139 or next_header == 140:
                if offset + 8 > total_length:
                    return DECODE_TRUNCATED
                ext_length = (data[offset + 1] + 1) * 8
            elif next_header == 44:
                if offset + 8 > total_length:
                    return DECODE_TRUNCATED
                fragment_field = be16(data + offset + 2)
                if fragment_field & 0xFFF8:
                    return DECODE_FRAGMENT
                if fragment_field & 0x0001:
                    packet.first_fragment = 1
                ext_length = 8
            elif next_header == 51:   # AH (RFC 4302): length in 4-octet units, minus 2
                if offset + 8 > total_length:
                    return DECODE_TRUNCATED
                ext_length = (data[offset + 1] + 2) * 4
            else:
                break
            extension_count += 1
            if extension_count > MAX_IPV6_EXTENSION_HEADERS:
                return DECODE_MALFORMED
            if offset + ext_length > total_length:
                return DECODE_TRUNCATED
            next_header = data[offset]
            offset += ext_length
        packet.protocol = next_header
        l4_length = total_length - offset
    else:
        return DECODE_MALFORMED

    data += offset
    packet.transport = data
    packet.transport_len = l4_length
    if packet.protocol == PROTO_TCP:
        if l4_length < 20:
            return DECODE_FRAGMENT if packet.first_fragment else DECODE_TRUNCATED
        header_length = (data[12] >> 4) * 4
        if header_length < 20:
            return DECODE_MALFORMED
        if header_length > l4_length:
            return DECODE_TRUNCATED
        packet.sport = be16(data)
        packet.dport = be16(data + 2)
        packet.seq = be32(data + 4)
        packet.tcp_flags = data[13]
        packet.payload = data + header_length
        packet.payload_len = l4_length - header_length
        return DECODE_OK
    if packet.protocol == PROTO_UDP:
        if l4_length < 8:
            return DECODE_FRAGMENT if packet.first_fragment else DECODE_TRUNCATED
        packet.sport = be16(data)
        packet.dport = be16(data + 2)
        header_length = be16(data + 4)      # the UDP length field
        if header_length < 8:
            return DECODE_MALFORMED
        if header_length > l4_length:
            if not packet.first_fragment:
                return DECODE_TRUNCATED
            header_length = l4_length
        packet.payload = data + 8
        packet.payload_len = header_length - 8
        return DECODE_OK
    packet.sport = 0
    packet.dport = 0
    return DECODE_OTHER


cdef inline uint64_t ones_complement_sum(const uint8_t* data, Py_ssize_t length, uint64_t total) noexcept nogil:
    """RFC 1071 sum in native byte order (the check below does not depend on it), 4 bytes a step."""
    cdef uint32_t word
    cdef uint16_t half
    while length >= 4:
        memcpy(&word, data, 4)
        total += word
        data += 4
        length -= 4
    if length >= 2:
        memcpy(&half, data, 2)
        total += half
        data += 2
        length -= 2
    if length:
        half = 0
        memcpy(&half, data, 1)      # the odd last byte, padded with a zero byte after it
        total += half
    return total


cdef bint tcp_checksum_valid(const Packet* packet) noexcept nogil:
    """Whether a TCP segment's checksum (RFC 9293 3.1, pseudo-header included) is right."""
    cdef uint8_t pseudo[40]
    cdef uint64_t total
    cdef Py_ssize_t pseudo_length
    cdef uint32_t length = <uint32_t>packet.transport_len
    if packet.ip_version == 4:
        memcpy(pseudo, packet.src, 4)
        memcpy(pseudo + 4, packet.dst, 4)
        pseudo[8] = 0
        pseudo[9] = PROTO_TCP
        pseudo[10] = <uint8_t>(length >> 8)
        pseudo[11] = <uint8_t>length
        pseudo_length = 12
    else:
        memcpy(pseudo, packet.src, 16)
        memcpy(pseudo + 16, packet.dst, 16)
        pseudo[32] = <uint8_t>(length >> 24)
        pseudo[33] = <uint8_t>(length >> 16)
        pseudo[34] = <uint8_t>(length >> 8)
        pseudo[35] = <uint8_t>length
        pseudo[36] = 0
        pseudo[37] = 0
        pseudo[38] = 0
        pseudo[39] = PROTO_TCP
        pseudo_length = 40
    total = ones_complement_sum(packet.transport, packet.transport_len,
                                ones_complement_sum(pseudo, pseudo_length, 0))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


cdef bint tcp_has_md5_option(const Packet* packet) noexcept nogil:
    """Whether the TCP options (RFC 9293 3.2) carry a TCP-MD5 signature (RFC 2385)."""
    cdef const uint8_t* options = packet.transport + 20
    cdef Py_ssize_t length = packet.payload - options, i = 0
    while i < length:
        if options[i] == TCP_OPTION_END:
            return False
        if options[i] == TCP_OPTION_NOP:
            i += 1
            continue
        if options[i] == TCP_OPTION_MD5:
            return True
        if i + 1 >= length or options[i + 1] < 2:
            return False
        i += options[i + 1]
    return False


# ---------------------------------------------------------------- DNS

cdef ParseStatus parse_dns_query(const uint8_t* msg, Py_ssize_t length, NameResult* result) noexcept nogil:
    """The first question's name of a DNS query (RFC 1035 4.1); NEED_MORE when cut short.

    Compression pointers must point strictly backwards, so they can neither loop nor
    leave the message.
    """
    cdef char presentation[256]
    cdef Py_ssize_t out = 0, position = 12, label_start, after_name = -1
    cdef uint8_t label_length
    cdef int hops = 0, j
    if length < 12:
        return PARSE_NEED_MORE
    if msg[2] & 0x80 or (msg[2] >> 3) & 0x0F != 0:    # a response, or not a standard QUERY
        result.kind = KIND_NONE
        return PARSE_DONE
    if be16(msg + 4) == 0:
        result.kind = KIND_NONE
        return PARSE_DONE
    while True:
        if position >= length:
            return PARSE_NEED_MORE
        label_length = msg[position]
        if label_length == 0:
            if after_name < 0:
                after_name = position + 1
            break
        if label_length & 0xC0 == 0xC0:
            if position + 1 >= length:
                return PARSE_NEED_MORE
            label_start = ((label_length & 0x3F) << 8) | msg[position + 1]
            hops += 1
            if label_start < 12 or label_start >= position or hops > DNS_MAX_POINTER_HOPS:
                return PARSE_MALFORMED
            if after_name < 0:
                after_name = position + 2
            position = label_start
            continue
        if label_length & 0xC0:
            return PARSE_MALFORMED        # extended label types (RFC 6891) are obsolete
        if position + 1 + label_length > length:
            return PARSE_NEED_MORE
        if out + label_length + 1 > 254:
            return PARSE_MALFORMED
        if out:
            presentation[out] = b'.'
            out += 1
        for j in range(label_length):
            if msg[position + 1 + j] == b'.':
                result.invalid_name = 1       # a dot inside a label cannot be written as a host name
                result.kind = KIND_NONE
                return PARSE_DONE
            presentation[out] = msg[position + 1 + j]
            out += 1
        position += 1 + label_length
    if after_name + 4 > length:
        return PARSE_NEED_MORE
    result.dns_qtype = be16(msg + after_name)
    if out == 0:          # the root: priming queries carry no name to judge
        result.kind = KIND_NONE
        return PARSE_DONE
    return set_name(result, KIND_DNS, <const uint8_t*>presentation, out)


# ---------------------------------------------------------------- TLS ClientHello

cdef ParseStatus parse_client_hello_message(const uint8_t* msg, Py_ssize_t length,
                                            NameResult* result) noexcept nogil:
    """SNI and ECH presence from a ClientHello handshake message (RFC 8446 4.1.2)."""
    cdef const uint8_t* p
    cdef const uint8_t* end
    cdef const uint8_t* ext_end
    cdef const uint8_t* list_end
    cdef Py_ssize_t body_length, n
    cdef uint16_t ext_type, ext_length, name_length
    cdef bint name_seen = False
    if length < 4:
        return PARSE_NEED_MORE
    if msg[0] != TLS_HANDSHAKE_CLIENT_HELLO:
        return PARSE_MALFORMED
    body_length = be24(msg + 1)
    if length < 4 + body_length:
        return PARSE_NEED_MORE
    p = msg + 4
    end = p + body_length
    if end - p < 35:                          # legacy_version, random, session id length
        return PARSE_MALFORMED
    p += 34
    n = p[0]
    if n > 32:
        return PARSE_MALFORMED
    p += 1 + n
    if end - p < 2:
        return PARSE_MALFORMED
    n = be16(p)
    if n < 2 or n & 1:
        return PARSE_MALFORMED
    p += 2 + n
    if end - p < 1:
        return PARSE_MALFORMED
    n = p[0]
    p += 1 + n
    if p > end:
        return PARSE_MALFORMED
    result.kind = KIND_NONE
    if p == end:                              # no extensions at all
        return PARSE_DONE
    if end - p < 2:
        return PARSE_MALFORMED
    n = be16(p)
    p += 2
    if end - p < n:
        return PARSE_MALFORMED
    ext_end = p + n
    while p < ext_end:
        if ext_end - p < 4:
            return PARSE_MALFORMED
        ext_type = be16(p)
        ext_length = be16(p + 2)
        p += 4
        if ext_end - p < ext_length:
            return PARSE_MALFORMED
        if ext_type == TLS_EXT_SERVER_NAME:
            # server_name_list (RFC 6066 3) holds one host_name; more entries, a second
            # extension or a list that does not add up are read as well (a conflict, or an
            # unreadable name) rather than letting one of them through unjudged.
            if ext_length < 2 or 2 + be16(p) != ext_length:
                result.invalid_name = 1
            else:
                list_end = p + ext_length
                n = 2
                while p + n < list_end:
                    if p + n + 3 > list_end:
                        result.invalid_name = 1
                        break
                    name_length = be16(p + n + 1)
                    if p + n + 3 + name_length > list_end:
                        result.invalid_name = 1
                        break
                    if p[n] == 0:
                        add_name(result, KIND_SNI, p + n + 3, name_length, not name_seen)
                        name_seen = True
                    n += 3 + name_length
        elif ext_type == TLS_EXT_ENCRYPTED_CLIENT_HELLO:
            result.ech = 1
        p += ext_length
    return PARSE_DONE


cdef ParseStatus parse_tls_stream(const uint8_t* stream, Py_ssize_t length, uint8_t* scratch,
                                  Py_ssize_t scratch_size, NameResult* result) noexcept nogil:
    """A ClientHello from the start of a TLS stream, gathered across records when split."""
    cdef Py_ssize_t position = 0, record_length, available, gathered = 0, needed = -1
    if length >= 6 and stream[0] == TLS_CONTENT_HANDSHAKE and stream[5] != TLS_HANDSHAKE_CLIENT_HELLO \
            and be16(stream + 3) != 0:
        # A ServerHello or later flight: the server's side of a flow, which names nothing.
        result.kind = KIND_NONE
        return PARSE_DONE
    if length >= 5 and stream[0] == TLS_CONTENT_HANDSHAKE:
        record_length = be16(stream + 3)
        if record_length >= 4 and length >= 9 and 4 + <Py_ssize_t>be24(stream + 6) <= record_length:
            # The usual case: one record holds the whole ClientHello; parse it in place.
            if stream[1] != 3 or record_length > TLS_MAX_RECORD:
                return PARSE_MALFORMED
            return parse_client_hello_message(stream + 5, min(length - 5, record_length), result)
    while True:
        if length - position < 5:
            if position < length and stream[position] != TLS_CONTENT_HANDSHAKE:
                return PARSE_MALFORMED
            return PARSE_NEED_MORE
        if stream[position] != TLS_CONTENT_HANDSHAKE or stream[position + 1] != 3:
            return PARSE_MALFORMED
        record_length = be16(stream + position + 3)
        if record_length == 0 or record_length > TLS_MAX_RECORD:
            return PARSE_MALFORMED
        position += 5
        available = min(record_length, length - position)
        if needed < 0 and gathered + available >= 4:
            # the handshake header may itself straddle two records
            memcpy(scratch + gathered, stream + position, 4 - gathered)
            if scratch[0] != TLS_HANDSHAKE_CLIENT_HELLO:
                return PARSE_MALFORMED
            needed = 4 + be24(scratch + 1)
            if needed > scratch_size:
                return PARSE_MALFORMED
        if needed >= 0:
            available = min(available, needed - gathered)
        elif gathered + available > scratch_size:
            return PARSE_MALFORMED
        memcpy(scratch + gathered, stream + position, available)
        gathered += available
        if needed >= 0 and gathered >= needed:
            return parse_client_hello_message(scratch, gathered, result)
        if position + record_length > length:
            return PARSE_NEED_MORE
        position += record_length


# ---------------------------------------------------------------- HTTP/1.x

cdef inline uint8_t ascii_lower(uint8_t c) noexcept nogil:
    return c + 32 if b'A' <= c <= b'Z' else c

cdef Py_ssize_t find_line_end(const uint8_t* data, Py_ssize_t start, Py_ssize_t length) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(start, length):
        if data[i] == b'\n':
            return i
    return -1

cdef Py_ssize_t authority_host(const uint8_t** value, Py_ssize_t length) noexcept nogil:
    """The host part of a Host header value or URI authority (userinfo and port dropped, in
    place); -1 when the port is not a number, -2 for an IPv6 literal (an address, no name)."""
    cdef Py_ssize_t i, j
    for i in range(length - 1, -1, -1):
        if value[0][i] == b'@':
            value[0] += i + 1
            length -= i + 1
            break
    if length > 0 and value[0][0] == b'[':
        return -2
    for i in range(length):
        if value[0][i] == b':':
            for j in range(i + 1, length):          # port = *DIGIT (RFC 3986 3.2.3)
                if not (b'0' <= value[0][j] <= b'9'):
                    return -1
            return i
    return length

cdef void add_authority(const uint8_t* value, Py_ssize_t length, NameResult* result, bint first) noexcept nogil:
    """One authority of a request (its target's, or a Host header's) as a name of the flow."""
    length = authority_host(&value, length)
    if length == -1:
        result.invalid_name = 1
    elif length > 0:                          # an empty Host names nothing
        add_name(result, KIND_HTTP_HOST, value, length, first)

cdef inline Py_ssize_t scheme_length(const uint8_t* target, Py_ssize_t length) noexcept nogil:
    """Length of an "http://" or "https://" prefix (any case), else 0."""
    cdef Py_ssize_t i, n
    n = 8 if length > 8 and (target[4] == b's' or target[4] == b'S') else 7
    if length <= n:
        return 0
    for i in range(n - 3):
        if ascii_lower(target[i]) != b"https"[i]:
            return 0
    return n if memcmp(target + n - 3, b"://", 3) == 0 else 0

cdef Py_ssize_t find_head_end(const uint8_t* data, Py_ssize_t length) noexcept nogil:
    """Bytes of an HTTP/1.x head up to and including its blank line (a line holding only
    CR LF or LF, as RFC 9112 2.2 lets a recipient read it); -1 while it is incomplete."""
    cdef Py_ssize_t line_start = 0, line_end
    while True:
        line_end = find_line_end(data, line_start, length)
        if line_end < 0:
            return -1
        if line_end == line_start or (line_end == line_start + 1 and data[line_start] == b'\r'):
            if line_start > 0:
                return line_end + 1
        line_start = line_end + 1

cdef inline bint field_named(const uint8_t* line, Py_ssize_t length, const char* name, Py_ssize_t name_length,
                             Py_ssize_t* colon) noexcept nogil:
    """A header line whose field name is name (lowercase), in any case; *colon is where the
    colon is, after any whitespace (which RFC 9112 5.1 forbids: the caller decides)."""
    cdef Py_ssize_t i
    if length <= name_length:
        return False
    for i in range(name_length):
        if ascii_lower(line[i]) != <uint8_t>name[i]:
            return False
    i = name_length
    while i < length and (line[i] == b' ' or line[i] == b'\t'):
        i += 1
    colon[0] = i
    return i < length and line[i] == b':'

cdef bint read_framing(const uint8_t* line, Py_ssize_t length, NameResult* result) noexcept nogil:
    """Content-Length and Transfer-Encoding header lines: how the body is framed (anything
    two servers could read two ways makes it unreadable). True for an Upgrade line."""
    cdef Py_ssize_t colon, start, end, i
    cdef uint64_t value = 0
    cdef bint is_length = field_named(line, length, "content-length", 14, &colon)
    cdef bint is_coding = not is_length and field_named(line, length, "transfer-encoding", 17, &colon)
    if not (is_length or is_coding):
        return field_named(line, length, "upgrade", 7, &colon)
    start = colon + 1
    end = length
    while start < end and (line[start] == b' ' or line[start] == b'\t'):
        start += 1
    while end > start and (line[end - 1] == b' ' or line[end - 1] == b'\t'):
        end -= 1
    if colon != (14 if is_length else 17) or start == end or result.body == BODY_UNREADABLE:
        result.body = BODY_UNREADABLE
        return False
    if is_coding:
        if end - start != 7 or result.body == BODY_LENGTH or result.body == BODY_CHUNKED:
            result.body = BODY_UNREADABLE
            return False
        for i in range(7):
            if ascii_lower(line[start + i]) != b"chunked"[i]:
                result.body = BODY_UNREADABLE
                return False
        result.body = BODY_CHUNKED
        return False
    if end - start > 15 or result.body == BODY_CHUNKED:
        result.body = BODY_UNREADABLE
        return False
    for i in range(start, end):
        if not (b'0' <= line[i] <= b'9'):
            result.body = BODY_UNREADABLE
            return False
        value = value * 10 + (line[i] - 48)  # '0'
    if result.body == BODY_LENGTH and value != result.body_length:
        result.body = BODY_UNREADABLE
        return False
    result.body = BODY_LENGTH
    result.body_length = value
    return False

cdef ParseStatus parse_http_head(const uint8_t* head, Py_ssize_t length, NameResult* result) noexcept nogil:
    """Host of an HTTP/1.x request (RFC 9112), settled when the whole head has arrived.

    Every authority the head gives is read: the request target's (absolute or authority
    form) and each Host header, so a second, different one is seen (result.conflict).
    """
    cdef Py_ssize_t i = 0, line_end, line_start, target_start, target_end, value_start, path_start
    cdef Py_ssize_t line_length, colon, scheme
    cdef bint named = False, connect, upgrade = False
    while i < length and i < HTTP_MAX_METHOD and ((b'A' <= head[i] <= b'Z') or head[i] == b'-'):
        i += 1
    if i == length and i < HTTP_MAX_METHOD:
        return PARSE_NEED_MORE
    if i == 0 or i >= length or head[i] != b' ':
        return PARSE_MALFORMED
    connect = i == 7 and memcmp(head, b"CONNECT", 7) == 0
    target_start = i + 1
    line_end = find_line_end(head, target_start, length)
    if line_end < 0:
        return PARSE_NEED_MORE
    line_length = line_end - (1 if line_end > 0 and head[line_end - 1] == b'\r' else 0)
    # request-line = method SP request-target SP HTTP-version
    if line_length - target_start < 10 or memcmp(head + line_length - 9, b" HTTP/1.", 8) != 0:
        return PARSE_MALFORMED
    target_end = line_length - 9
    path_start = target_start
    result.kind = KIND_NONE
    result.body = BODY_TUNNEL if connect else BODY_NONE
    result.body_length = 0
    scheme = scheme_length(head + target_start, target_end - target_start)
    if connect:                               # authority-form: the tunnel's far end
        add_authority(head + target_start, target_end - target_start, result, True)
        named = True
        path_start = target_end
    elif scheme:
        i = target_start + scheme
        while i < target_end and head[i] != b'/' and head[i] != b'?' and head[i] != b'#':
            i += 1
        add_authority(head + target_start + scheme, i - target_start - scheme, result, True)
        named = True
        path_start = i
    # The path, for URL-prefix rules (plain HTTP only): kept as sent, cut at 255 bytes.
    result.path_len = <int>min(target_end - path_start, 255)
    memcpy(result.path, head + path_start, result.path_len)
    result.path[result.path_len] = 0
    line_start = line_end + 1
    while True:
        line_end = find_line_end(head, line_start, length)
        if line_end < 0:
            return PARSE_NEED_MORE
        line_length = line_end - line_start
        if line_length > 0 and head[line_end - 1] == b'\r':
            line_length -= 1
        if line_length == 0:
            break
        if field_named(head + line_start, line_length, "host", 4, &colon):
            if colon != 4:
                result.invalid_name = 1           # "Host :": servers differ on reading it
            value_start = line_start + colon + 1
            i = line_start + line_length
            while value_start < i and (head[value_start] == b' ' or head[value_start] == b'\t'):
                value_start += 1
            while i > value_start and (head[i - 1] == b' ' or head[i - 1] == b'\t'):
                i -= 1
            add_authority(head + value_start, i - value_start, result, not named)
            named = True
        elif not connect and read_framing(head + line_start, line_length, result):
            upgrade = True
        line_start = line_end + 1
    if upgrade and result.body != BODY_UNREADABLE:
        result.body = BODY_TUNNEL
    result.head_len = <int>min(line_end + 1, 0x7FFFFFFF)
    return PARSE_DONE


# ---------------------------------------------------------------- stream starts

cdef enum StreamProtocol:
    STREAM_UNKNOWN = 0
    STREAM_TLS = 1
    STREAM_HTTP = 2
    STREAM_DNS = 3

cdef inline StreamProtocol stream_protocol(const uint8_t* data, Py_ssize_t length,
                                           uint16_t dport) noexcept nogil:
    """Which parser a client stream's first bytes belong to; UNKNOWN when none."""
    cdef Py_ssize_t i
    if dport == DNS_PORT:
        return STREAM_DNS
    if data[0] == TLS_CONTENT_HANDSHAKE:
        if (length < 2 or data[1] == 3) and (length < 3 or data[2] <= 4):
            return STREAM_TLS
        return STREAM_UNKNOWN
    for i in range(min(length, HTTP_MAX_METHOD)):
        if data[i] == b' ':
            return STREAM_HTTP if i > 0 else STREAM_UNKNOWN
        if not ((b'A' <= data[i] <= b'Z') or data[i] == b'-'):
            return STREAM_UNKNOWN
    return STREAM_HTTP if length < HTTP_MAX_METHOD else STREAM_UNKNOWN


cdef ParseStatus parse_stream(StreamProtocol protocol, const uint8_t* data, Py_ssize_t length,
                              uint8_t* scratch, Py_ssize_t scratch_size,
                              NameResult* result) noexcept nogil:
    cdef Py_ssize_t message_length
    if protocol == STREAM_TLS:
        return parse_tls_stream(data, length, scratch, scratch_size, result)
    if protocol == STREAM_HTTP:
        return parse_http_head(data, length, result)
    # DNS over TCP (RFC 7766): a 2-byte length, then one message; wait for all of it
    if length < 2:
        return PARSE_NEED_MORE
    message_length = be16(data)
    if length - 2 < message_length:
        return PARSE_NEED_MORE
    if parse_dns_query(data + 2, message_length, result) == PARSE_DONE:
        return PARSE_DONE
    return PARSE_MALFORMED


KIND_NAMES = {KIND_DNS: "dns", KIND_SNI: "sni", KIND_HTTP_HOST: "http_host", KIND_QUIC_INITIAL: "quic_initial"}


cdef inline bint is_quic_client_initial(const uint8_t* datagram) noexcept nogil:
    """Long header with the fixed bit, QUIC v1 or v2, packet type Initial (RFC 9000 17.2, RFC 9369 3.2)."""
    cdef uint32_t version
    cdef uint8_t packet_type
    if datagram[0] & 0xC0 != 0xC0 or datagram[5] > 20:
        return False
    version = be32(datagram + 1)
    packet_type = (datagram[0] >> 4) & 0x03
    return (version == QUIC_V1 and packet_type == 0) or (version == QUIC_V2 and packet_type == 1)


cdef inline void fill_flow_key(FlowKey* key, const Packet* packet) noexcept nogil:
    memset(key, 0, sizeof(FlowKey))
    key.ip_version = packet.ip_version
    memcpy(key.src, packet.src, 16)
    memcpy(key.dst, packet.dst, 16)
    key.sport = packet.sport
    key.dport = packet.dport


cdef inline uint64_t hash_flow_key(const FlowKey* key) noexcept nogil:
    return ef_hash_flow(<uint64_t>key.ip_version | (<uint64_t>key.sport << 16) | (<uint64_t>key.dport << 32),
                        key.src, key.dst)


cdef class Extraction:
    """A name found in a packet, with the flow it belongs to (addresses as packed bytes)."""
    cdef readonly str kind
    cdef readonly object value
    cdef readonly bint ech
    cdef readonly int ip_version
    cdef readonly int protocol
    cdef readonly bytes src
    cdef readonly bytes dst
    cdef readonly int sport
    cdef readonly int dport
    cdef readonly int dns_qtype
    cdef readonly object payload

    def __repr__(self):
        return f"Extraction(kind={self.kind!r}, value={self.value!r}, ech={self.ech})"


# ---------------------------------------------------------------- the extractor

cdef class FlowExtractor:
    """Extracts names packet by packet, reassembling client stream prefixes per TCP flow.

    max_flows (rounded up to a power of two) bounds the flow table, max_streams the
    flows being reassembled at once, buffer_size the bytes kept per flow; a flow not
    seen for flow_timeout seconds is forgotten. Past the kernel's packet bound a flow's
    ClientHello or request head may take handshake_timeout seconds from its first byte and
    max_handshake_packets more packets; verify_checksums drops segments with a bad TCP
    checksum from inspection (off for captures, whose checksums are often offloaded).
    """

    def __cinit__(self, Py_ssize_t max_flows=65536, Py_ssize_t max_streams=1024,
                  Py_ssize_t buffer_size=16384, double flow_timeout=30.0, double handshake_timeout=10.0,
                  uint32_t max_handshake_packets=65536, bint verify_checksums=False):
        cdef Py_ssize_t capacity = SLOT_PROBES
        if max_flows < 1 or max_streams < 1 or buffer_size < 512 or buffer_size > (1 << 24) \
                or flow_timeout <= 0 or handshake_timeout <= 0 or max_handshake_packets < 1:
            raise ValueError("FlowExtractor limits must be positive (buffer_size 512 B .. 16 MiB)")
        while capacity < max_flows:
            capacity <<= 1
        self.slots = <FlowSlot*>calloc(capacity, sizeof(FlowSlot))
        self.scratch = <uint8_t*>malloc(buffer_size)
        if self.slots == NULL or self.scratch == NULL:
            raise MemoryError()
        self.slot_mask = <uint32_t>(capacity - 1)
        self.buffer_size = buffer_size
        self.max_streams = max_streams
        self.flow_timeout = flow_timeout
        self.handshake_timeout = handshake_timeout
        self.max_handshake_packets = max_handshake_packets
        self.verify_checksums = verify_checksums
        self.checksum_ready = True
        self.last_sweep = 0.0

    def __dealloc__(self):
        cdef uint32_t i
        if self.slots != NULL:
            for i in range(self.slot_mask + 1):
                free(self.slots[i].stream)
            free(self.slots)
        free(self.scratch)

    # ---- flow table: SLOT_PROBES-way buckets, so no tombstones are needed

    cdef void release(self, FlowSlot* slot) noexcept nogil:
        if slot.stream != NULL:
            free(slot.stream)
            slot.stream = NULL
            self.streams_in_use -= 1
        slot.hash = 0
        slot.state = FLOW_EMPTY

    cdef FlowSlot* lookup(self, const FlowKey* key, uint64_t hash, double now) noexcept nogil:
        cdef FlowSlot* slot
        cdef int i
        for i in range(SLOT_PROBES):
            slot = &self.slots[(hash + i) & self.slot_mask]
            if slot.hash == hash and memcmp(&slot.key, key, sizeof(FlowKey)) == 0:
                if now - slot.last_seen > self.flow_timeout:
                    self.release(slot)
                    self.counters.flows_expired += 1
                    return NULL
                slot.last_seen = now
                return slot
        return NULL

    cdef FlowSlot* claim(self, const FlowKey* key, uint64_t hash, double now) noexcept nogil:
        """A slot for a new flow: a free or expired one in the bucket, else the oldest."""
        cdef FlowSlot* slot
        cdef FlowSlot* victim = NULL
        cdef int i
        for i in range(SLOT_PROBES):
            slot = &self.slots[(hash + i) & self.slot_mask]
            if slot.hash == 0:
                victim = slot
                break
            if now - slot.last_seen > self.flow_timeout:
                self.counters.flows_expired += 1
                victim = slot
                break
            if victim == NULL or slot.last_seen < victim.last_seen:
                victim = slot
        else:
            self.counters.flows_evicted += 1
        self.release(victim)
        victim.hash = hash
        victim.key = key[0]
        victim.last_seen = now
        victim.base_known = 0
        self.reset_inspection(victim)
        self.counters.flows_tracked += 1
        return victim

    cdef void reset_inspection(self, FlowSlot* slot) noexcept nogil:
        slot.syn_hop_limit = 0
        slot.evasion = EVASION_NONE

    cdef void sweep_expired_streams(self, double now) noexcept nogil:
        """Frees reassembly buffers of flows gone quiet; run only when the pool is full."""
        cdef uint32_t i
        if now - self.last_sweep < 1.0:
            return
        self.last_sweep = now
        for i in range(self.slot_mask + 1):
            if self.slots[i].stream != NULL and now - self.slots[i].last_seen > self.flow_timeout:
                self.release(&self.slots[i])
                self.counters.flows_expired += 1

    # ---- stream reassembly

    cdef bint start_stream(self, FlowSlot* slot, double now) noexcept nogil:
        cdef StreamBuffer* stream
        if self.streams_in_use >= self.max_streams:
            self.sweep_expired_streams(now)
            if self.streams_in_use >= self.max_streams:
                self.counters.stream_pool_full += 1
                return False
        stream = <StreamBuffer*>malloc(sizeof(StreamBuffer) + self.buffer_size)
        if stream == NULL:
            self.counters.stream_pool_full += 1
            return False
        stream.interval_count = 0
        stream.parsed_upto = 0
        stream.started = now
        stream.bound_packets = 0
        stream.bound_ack_known = 0
        stream.data = <uint8_t*>(stream + 1)
        slot.stream = stream
        slot.state = FLOW_BUFFERING
        self.streams_in_use += 1
        self.counters.streams_buffered += 1
        return True

    cdef void add_segment(self, FlowSlot* slot, uint32_t seq, const uint8_t* data,
                          Py_ssize_t length) noexcept nogil:
        """Copies a segment into the flow's stream buffer; the first copy of a byte wins, as
        the receiver keeps it. Bytes beyond the buffer are ignored and counted, so a bogus
        far-away segment cannot end a flow before its name arrives.

        Which copy a server keeps when overlapping segments differ depends on its TCP stack
        (Linux keeps a later segment that covers an earlier out-of-order one whole, others
        the first), so no normalisation can promise to read what the server reads: a
        differing overlap is flagged (EVASION_OVERLAP) and shielded groups reset the flow."""
        cdef StreamBuffer* stream = slot.stream
        cdef long long start = <int32_t>(seq - slot.base_seq), end, shift, cursor, gap_end, held_end
        cdef int i, j, count = stream.interval_count
        if start < 0 and not slot.base_known:
            # An earlier segment of a flow whose start was guessed: move the guess back.
            shift = -start
            if count and stream.interval_end[count - 1] + shift > <uint32_t>self.buffer_size:
                self.counters.segments_outside_window += 1
                return
            if count:
                memmove(stream.data + shift, stream.data, stream.interval_end[count - 1])
            for i in range(count):
                stream.interval_start[i] += <uint32_t>shift
                stream.interval_end[i] += <uint32_t>shift
            stream.parsed_upto = 0
            slot.base_seq = seq
            start = 0
        end = start + length
        if start < 0:                  # bytes before the stream start (SYN retransmitted)
            data += -start
            start = 0
        if end > self.buffer_size:
            self.counters.segments_outside_window += 1
            end = self.buffer_size
        if end <= start:
            return
        # copy only the gaps, keeping bytes already held and comparing the new copy with them
        cursor = start
        for i in range(count):
            if stream.interval_end[i] <= cursor:
                continue
            if stream.interval_start[i] >= end:
                break
            if stream.interval_start[i] > cursor:
                gap_end = stream.interval_start[i]
                memcpy(stream.data + cursor, data + (cursor - start), gap_end - cursor)
                cursor = gap_end
            held_end = min(end, <long long>stream.interval_end[i])
            if memcmp(stream.data + cursor, data + (cursor - start), held_end - cursor) != 0:
                self.counters.overlaps_differing += 1
                self.flag(slot, EVASION_OVERLAP)
            cursor = max(cursor, <long long>stream.interval_end[i])
        if cursor < end:
            memcpy(stream.data + cursor, data + (cursor - start), end - cursor)
        # merge [start, end) into the sorted interval list
        i = 0
        while i < count and stream.interval_end[i] < start:
            i += 1
        j = i
        while j < count and stream.interval_start[j] <= end:
            start = min(start, <long long>stream.interval_start[j])
            end = max(end, <long long>stream.interval_end[j])
            j += 1
        if j == i:
            if count >= MAX_STREAM_INTERVALS:
                # Too many holes for a real handshake: the bytes are not recorded as held (a
                # later copy could not be compared with them); shielded groups reset the flow.
                self.counters.stream_holes_exceeded += 1
                self.flag(slot, EVASION_HOLES)
                return
            memmove(&stream.interval_start[i + 1], &stream.interval_start[i], (count - i) * sizeof(uint32_t))
            memmove(&stream.interval_end[i + 1], &stream.interval_end[i], (count - i) * sizeof(uint32_t))
            count += 1
        elif j > i + 1:
            memmove(&stream.interval_start[i + 1], &stream.interval_start[j], (count - j) * sizeof(uint32_t))
            memmove(&stream.interval_end[i + 1], &stream.interval_end[j], (count - j) * sizeof(uint32_t))
            count -= j - i - 1
        stream.interval_start[i] = <uint32_t>start
        stream.interval_end[i] = <uint32_t>end
        stream.interval_count = count

    # ---- per packet

    cdef int process(self, const uint8_t* data, Py_ssize_t length, double now) noexcept nogil:
        """Decodes one packet; returns the NameKind found (details in self.result/packet)."""
        cdef Packet* packet = &self.packet
        cdef DecodeStatus decoded
        cdef ParseStatus status
        cdef StreamProtocol protocol
        cdef FlowKey key
        cdef FlowSlot* slot
        cdef uint64_t hash
        cdef uint32_t seq, contiguous
        cdef int i
        self.counters.packets += 1
        self.result.kind = KIND_NONE
        self.result.ech = 0
        self.result.invalid_name = 0
        self.result.dns_qtype = 0
        self.result.name_len = 0
        self.result.path_len = 0
        self.result.conflict = 0
        self.result.alt_name_len = 0
        self.result.head_len = 0
        self.http_rest_len = 0
        self.settled = False
        self.evasion = EVASION_NONE
        self.decoy = False
        decoded = decode_ip(data, length, packet)
        self.decoded = decoded
        if packet.ip_version == 4:
            self.counters.ipv4 += 1
        elif packet.ip_version == 6:
            self.counters.ipv6 += 1
        if EF_UNLIKELY(decoded != DECODE_OK):
            if decoded == DECODE_TRUNCATED:
                self.counters.truncated += 1
            elif decoded == DECODE_MALFORMED:
                self.counters.malformed += 1
            elif decoded == DECODE_FRAGMENT:
                self.counters.fragments += 1
            else:
                self.counters.other_protocol += 1
            return KIND_NONE

        if packet.protocol == PROTO_UDP:
            self.counters.udp += 1
            if packet.dport == DNS_PORT:
                status = parse_dns_query(packet.payload, packet.payload_len, &self.result)
                if status != PARSE_DONE:
                    self.counters.malformed += 1
                    return KIND_NONE
                return self.count_name()
            if packet.first_fragment:
                self.counters.fragments += 1
                return KIND_NONE
            if packet.payload_len >= QUIC_MIN_CLIENT_DATAGRAM and is_quic_client_initial(packet.payload):
                self.counters.quic_initials += 1
                self.result.kind = KIND_QUIC_INITIAL
                return KIND_QUIC_INITIAL
            return KIND_NONE

        self.counters.tcp += 1
        if packet.first_fragment:
            self.counters.fragments += 1
            return KIND_NONE
        seq = packet.seq
        if packet.tcp_flags & TCP_SYN:
            if packet.tcp_flags & TCP_ACK:
                return KIND_NONE           # the server's side carries no name
        elif packet.payload_len == 0 and not packet.tcp_flags & (TCP_FIN | TCP_RST):
            return KIND_NONE               # a bare ACK: nothing to read, no table work
        fill_flow_key(&key, packet)
        hash = hash_flow_key(&key)
        slot = self.lookup(&key, hash, now)

        if packet.tcp_flags & TCP_SYN:
            if slot == NULL:
                slot = self.claim(&key, hash, now)
            elif slot.stream != NULL:
                self.release(slot)
                slot.hash = hash
                slot.key = key
                slot.last_seen = now
            self.reset_inspection(slot)
            slot.syn_hop_limit = packet.hop_limit
            slot.state = FLOW_SYN_SEEN
            slot.base_seq = seq + 1
            slot.base_known = 1
            seq += 1                        # TCP Fast Open data follows the SYN's sequence number
            if packet.payload_len == 0:
                return KIND_NONE
        elif packet.tcp_flags & TCP_RST or (packet.tcp_flags & TCP_FIN and packet.payload_len == 0):
            if slot != NULL:
                self.release(slot)
            return KIND_NONE

        if slot == NULL or slot.state != FLOW_DONE:
            if slot != NULL:
                self.evasion = slot.evasion
            if not packet.tcp_flags & TCP_SYN and self.is_decoy(slot):
                return KIND_NONE           # the server drops it: it must not decide the flow
            if EF_UNLIKELY(packet.tcp_flags & TCP_URG) and be16(packet.transport + 18) != 0:
                # The server's stack takes the urgent byte out of the stream (SO_OOBINLINE is
                # off by default), so the stream read here is not the one the server reads.
                self.counters.urgent_data += 1
                self.flag(slot, EVASION_URGENT)

        if slot == NULL:
            protocol = stream_protocol(packet.payload, packet.payload_len, packet.dport)
            if protocol == STREAM_UNKNOWN:
                self.settled = True        # data of a flow we never saw start, in no protocol we read
                return KIND_NONE
            status = parse_stream(protocol, packet.payload, packet.payload_len, self.scratch,
                                  self.buffer_size, &self.result)
            if status == PARSE_NEED_MORE:
                # No SYN seen (capture started mid-handshake): guess the stream starts here.
                slot = self.claim(&key, hash, now)
                slot.base_seq = seq
                if not self.start_stream(slot, now):
                    return self.settle(slot)
                self.add_segment(slot, seq, packet.payload, packet.payload_len)
                slot.stream.parsed_upto = <uint32_t>min(packet.payload_len, self.buffer_size)
                return KIND_NONE
            if status == PARSE_MALFORMED:
                self.counters.malformed += 1
                self.settled = True
                return KIND_NONE
            self.keep_http_rest(packet.payload, packet.payload_len, seq, False)
            return self.count_name()

        if slot.state == FLOW_DONE:
            self.settled = True
            return KIND_NONE
        if slot.state == FLOW_SYN_SEEN:
            if seq == slot.base_seq:
                # In-order first segment: parse it where it lies, buffer only if it is partial.
                protocol = stream_protocol(packet.payload, packet.payload_len, packet.dport)
                if protocol == STREAM_UNKNOWN:
                    return self.settle(slot)
                status = parse_stream(protocol, packet.payload, packet.payload_len, self.scratch,
                                      self.buffer_size, &self.result)
                if status != PARSE_NEED_MORE:
                    self.keep_http_rest(packet.payload, packet.payload_len, seq, False)
                    return self.settle_parsed(slot, status)
                if not self.start_stream(slot, now):
                    return self.settle(slot)
                self.add_segment(slot, seq, packet.payload, packet.payload_len)
                slot.stream.parsed_upto = <uint32_t>min(packet.payload_len, self.buffer_size)
                return KIND_NONE
            if not self.start_stream(slot, now):
                return self.settle(slot)
        self.add_segment(slot, seq, packet.payload, packet.payload_len)
        if slot.stream.interval_count == 0 or slot.stream.interval_start[0] != 0:
            return KIND_NONE
        contiguous = slot.stream.interval_end[0]
        if contiguous <= slot.stream.parsed_upto:
            return KIND_NONE               # a retransmission or a segment after a gap
        slot.stream.parsed_upto = contiguous
        protocol = stream_protocol(slot.stream.data, contiguous, packet.dport)
        if protocol == STREAM_UNKNOWN:
            return self.settle(slot)
        status = parse_stream(protocol, slot.stream.data, contiguous, self.scratch,
                              self.buffer_size, &self.result)
        if status == PARSE_NEED_MORE:
            if contiguous >= <uint32_t>self.buffer_size:
                return self.overflow(slot)
            return KIND_NONE
        self.keep_http_rest(slot.stream.data, contiguous, slot.base_seq, True)
        return self.settle_parsed(slot, status)

    cdef void keep_http_rest(self, const uint8_t* stream, Py_ssize_t length, uint32_t stream_seq,
                             bint copy) noexcept nogil:
        """After a complete HTTP request head: the stream bytes that follow it (the body, or
        pipelined requests) and their sequence number, for the HTTP follower. copy: the
        stream is a buffer about to be freed, so the bytes go to scratch."""
        cdef Py_ssize_t head = self.result.head_len
        if head <= 0 or head > length:
            return
        self.http_rest_seq = stream_seq + <uint32_t>head
        self.http_rest_len = length - head
        if copy and self.http_rest_len:
            memmove(self.scratch, stream + head, self.http_rest_len)
            self.http_rest = self.scratch
        else:
            self.http_rest = stream + head

    cdef int count_name(self) noexcept nogil:
        if self.result.invalid_name:
            self.counters.invalid_names += 1
        if self.result.kind == KIND_DNS:
            self.counters.names_dns += 1
        elif self.result.kind == KIND_SNI:
            self.counters.names_sni += 1
            if self.result.ech:
                self.counters.ech += 1
        elif self.result.kind == KIND_HTTP_HOST:
            self.counters.names_http_host += 1
        return self.result.kind

    cdef int settle(self, FlowSlot* slot) noexcept nogil:
        """Marks a flow as decided with no name, freeing its buffer."""
        if slot.stream != NULL:
            free(slot.stream)
            slot.stream = NULL
            self.streams_in_use -= 1
        slot.state = FLOW_DONE
        self.settled = True
        self.result.kind = KIND_NONE
        return KIND_NONE

    cdef int settle_parsed(self, FlowSlot* slot, ParseStatus status) noexcept nogil:
        cdef int kind
        if status == PARSE_MALFORMED:
            self.counters.malformed += 1
            return self.settle(slot)
        kind = self.count_name()
        self.settle(slot)
        self.result.kind = kind
        return kind

    cdef int overflow(self, FlowSlot* slot) noexcept nogil:
        """A stream prefix filled its buffer and is still not a whole ClientHello/request."""
        self.counters.stream_overflows += 1
        self.counters.handshakes_unfinished += 1
        self.flag(slot, EVASION_UNFINISHED)
        return self.settle(slot)

    # ---- what the server would not read

    cdef bint is_decoy(self, FlowSlot* slot) noexcept nogil:
        """Whether the server would drop this data segment of a flow whose name is still
        looked for, so it must not be read (dropped_by_server); flagged EVASION_DECOY."""
        cdef long long offset = 0
        if slot != NULL and slot.base_known:
            offset = <int32_t>(self.packet.seq - slot.base_seq)
        if not self.dropped_by_server(slot.syn_hop_limit if slot != NULL else 0, offset):
            return False
        if slot != NULL or not self.conntrack_invalid:
            # (one conntrack found invalid in a flow not being inspected, a server's for one,
            # is only not read)
            self.flag(slot, EVASION_DECOY)
            self.decoy = True
        return True

    cdef bint dropped_by_server(self, uint8_t flow_hop_limit, long long offset) noexcept nogil:
        """Whether the server would drop the last packet, a data segment: a TTL/hop limit
        below the flow's (meant to expire between the gateway and the server), no ACK, a
        sequence number (offset from the stream start, 0 when unknown) far outside the
        window, a TCP-MD5 signature, a bad checksum, or anything else conntrack found invalid
        (its TCP window tracking is laxer than a server's). Counted by kind."""
        cdef Packet* packet = &self.packet
        if packet.hop_limit < flow_hop_limit:
            self.counters.decoys_low_hop_limit += 1
        elif not packet.tcp_flags & TCP_ACK:
            self.counters.decoys_no_ack += 1
        elif offset <= -SEQUENCE_WINDOW or offset >= self.buffer_size + SEQUENCE_WINDOW:
            self.counters.decoys_outside_window += 1
        elif packet.payload - packet.transport > 20 and tcp_has_md5_option(packet):
            self.counters.decoys_md5 += 1
        elif self.verify_checksums and self.checksum_ready and not tcp_checksum_valid(packet):
            self.counters.decoys_bad_checksum += 1
        elif self.conntrack_invalid:
            self.counters.decoys_conntrack_invalid += 1
        else:
            return False
        return True

    cdef void flag(self, FlowSlot* slot, uint8_t evasion) noexcept nogil:
        if slot != NULL:
            slot.evasion |= evasion
        self.evasion |= evasion

    cdef Handshake handshake_state(self, double now) noexcept nogil:
        """For the last packet, which came past the kernel's packet bound and named nothing:
        is its flow's ClientHello or request head still under way within the bounds (time
        since its first byte, or since the bound when none came yet; packets past the bound)?
        The stream buffer bounds the bytes."""
        cdef Packet* packet = &self.packet
        cdef FlowKey key
        cdef uint64_t hash
        cdef FlowSlot* slot
        cdef StreamBuffer* stream
        cdef uint32_t ack
        if self.decoded != DECODE_OK or packet.protocol != PROTO_TCP or self.settled:
            return HANDSHAKE_NONE
        fill_flow_key(&key, packet)
        hash = hash_flow_key(&key)
        slot = self.lookup(&key, hash, now)
        if slot == NULL or slot.state == FLOW_DONE:
            return HANDSHAKE_NONE
        if slot.stream == NULL and not self.start_stream(slot, now):
            return HANDSHAKE_NONE          # no buffer free: the group's default, as before
        stream = slot.stream
        if stream.interval_count == 0:
            # No client byte yet. A moving ACK number means the server is sending (it speaks
            # first, or this is a download): nothing of the client's to wait for.
            ack = be32(packet.transport + 8)
            if stream.bound_ack_known and ack != stream.bound_ack:
                self.settle(slot)
                return HANDSHAKE_NONE
            stream.bound_ack = ack
            stream.bound_ack_known = 1
        stream.bound_packets += 1
        if now - stream.started > self.handshake_timeout or stream.bound_packets > self.max_handshake_packets:
            self.counters.handshakes_unfinished += 1
            self.flag(slot, EVASION_UNFINISHED)
            self.settle(slot)
            return HANDSHAKE_UNFINISHED
        return HANDSHAKE_PENDING

    # ---- Python surface

    def extract(self, packet, double now):
        """The name one IP packet completes, as an Extraction, or None."""
        cdef const uint8_t[::1] view
        cdef int kind
        if type(packet) is bytes:
            kind = self.process(<const uint8_t*>PyBytes_AS_STRING(packet), PyBytes_GET_SIZE(packet), now)
        else:
            view = packet
            if view.shape[0] == 0:
                kind = self.process(<const uint8_t*>b"", 0, now)
            else:
                kind = self.process(&view[0], view.shape[0], now)
        if kind == KIND_NONE:
            return None
        return self.make_extraction(kind)

    def extract_batch(self, list packets, double now):
        """Runs a list of bytes packets through the extractor; returns how many gave a name."""
        cdef Py_ssize_t found = 0
        cdef object packet
        for packet in packets:
            if type(packet) is not bytes:
                raise TypeError("extract_batch takes a list of bytes")
            if self.process(<const uint8_t*>PyBytes_AS_STRING(<bytes>packet),
                            PyBytes_GET_SIZE(<bytes>packet), now) != KIND_NONE:
                found += 1
        return found

    cdef object make_extraction(self, int kind):
        cdef Extraction extraction = Extraction.__new__(Extraction)
        cdef int address_length = 4 if self.packet.ip_version == 4 else 16
        extraction.kind = KIND_NAMES[kind]
        extraction.value = self.result.name[:self.result.name_len].decode("ascii") \
            if kind != KIND_QUIC_INITIAL else None
        extraction.ech = self.result.ech
        extraction.ip_version = self.packet.ip_version
        extraction.protocol = self.packet.protocol
        extraction.src = PyBytes_FromStringAndSize(<char*>self.packet.src, address_length)
        extraction.dst = PyBytes_FromStringAndSize(<char*>self.packet.dst, address_length)
        extraction.sport = self.packet.sport
        extraction.dport = self.packet.dport
        extraction.dns_qtype = self.result.dns_qtype
        extraction.payload = PyBytes_FromStringAndSize(<char*>self.packet.payload, self.packet.payload_len) \
            if kind == KIND_QUIC_INITIAL else None
        return extraction

    @property
    def last_evasion(self):
        """Evasion bits of the last packet's flow, while its name was still being looked for."""
        return self.evasion

    def handshake_after_bound(self, double now):
        """The Handshake state of the last packet's flow, as the enforcer asks it for a packet
        past the kernel's packet bound (the packet is counted against the bound)."""
        return self.handshake_state(now)

    @property
    def stats(self):
        """Counters since creation: packets by protocol, drops by reason, names by kind."""
        counters = dict(self.counters)
        counters["streams_in_use"] = self.streams_in_use
        return counters


def normalise_name(raw):
    """The normalised host name (lowercase, no trailing dot), or None when invalid."""
    cdef const uint8_t[::1] view = raw
    cdef char out[256]
    cdef int n
    if view.shape[0] == 0 or view.shape[0] > 254:
        return None
    n = normalise_name_into(&view[0], view.shape[0], out)
    return out[:n].decode("ascii") if n >= 0 else None


def parse_client_hello(message):
    """(server name or None, has ECH) from a complete ClientHello handshake message,
    or None when it is malformed or incomplete. Used for QUIC's CRYPTO stream."""
    cdef const uint8_t[::1] view = message
    cdef NameResult result
    memset(&result, 0, sizeof(NameResult))
    if view.shape[0] == 0:
        return None
    if parse_client_hello_message(&view[0], view.shape[0], &result) != PARSE_DONE:
        return None
    name = result.name[:result.name_len].decode("ascii") if result.kind == KIND_SNI else None
    return name, bool(result.ech)


cdef dict name_result_view(ParseStatus status, const NameResult* result):
    return {
        "status": ("done", "need_more", "malformed")[status],
        "kind": KIND_NAMES.get(result.kind),
        "name": result.name[:result.name_len].decode("ascii") if result.kind != KIND_NONE else None,
        "alt_name": result.alt_name[:result.alt_name_len].decode("ascii") if result.conflict else None,
        "invalid": bool(result.invalid_name),
        "path": result.path[:result.path_len].decode("latin-1"),
        "head_len": result.head_len,
        "body": BodyFraming(result.body).name,
        "body_length": result.body_length,
    }


def parse_request_head(head):
    """What the fast path reads in an HTTP/1.x request head: a dict of status, name,
    alt_name (a second, different name), invalid (an unreadable name), path and head_len."""
    cdef const uint8_t[::1] view = head
    cdef NameResult result
    cdef ParseStatus status = PARSE_NEED_MORE
    memset(&result, 0, sizeof(NameResult))
    if view.shape[0]:
        status = parse_http_head(&view[0], view.shape[0], &result)
    return name_result_view(status, &result)


def parse_client_hello_names(message):
    """The same dict as parse_request_head for a ClientHello handshake message."""
    cdef const uint8_t[::1] view = message
    cdef NameResult result
    cdef ParseStatus status = PARSE_NEED_MORE
    memset(&result, 0, sizeof(NameResult))
    if view.shape[0]:
        status = parse_client_hello_message(&view[0], view.shape[0], &result)
    return name_result_view(status, &result)
