# cython: language_level=3
"""The HTTP follower: every request head in the client stream of an allowed plain-HTTP
connection, found by the request framing a server uses (RFC 9112 6: Content-Length or
chunked bodies, blank lines between requests), so a kept-alive or pipelining client is
judged on each request, not only on the first.

Only the client's packets that carry bytes reach it (the kernel rules queue nothing else of
such a flow). Bytes are taken in order: a segment that starts past the next expected byte
is dropped, so the client sends it again once the hole is filled; a retransmission of bytes
already read is let through. Nothing here allocates per packet, except a head buffer while a
request head spans segments.
"""

from libc.stdint cimport int32_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcmp, memcpy, memset

from edufilter._fastpath cimport (
    BODY_CHUNKED,
    BODY_LENGTH,
    BODY_NONE,
    BODY_TUNNEL,
    PARSE_DONE,
    FlowKey,
    NameResult,
    Packet,
    ParseStatus,
    find_head_end,
    parse_http_head,
)

cdef extern from "_hash.h":
    uint64_t ef_hash_flow(uint64_t fields, const uint8_t* src, const uint8_t* dst) nogil

cdef enum:
    SLOT_PROBES = 8
    HEAD_MAX = 16384         # a longer request head is refused by common servers (nginx: 4 x 8 KB lines)
    HEADS_BUFFERED_MAX = 4096
    MAX_HEX_DIGITS = 15

cdef enum FollowState:
    STATE_HEAD = 0           # at a message boundary, or inside a head (flow.head_len bytes kept)
    STATE_BODY = 1           # Content-Length bytes left
    STATE_CHUNK_SIZE = 2
    STATE_CHUNK_EXT = 3
    STATE_CHUNK_SIZE_LF = 4
    STATE_CHUNK_DATA = 5
    STATE_CHUNK_DATA_CR = 6
    STATE_CHUNK_DATA_LF = 7
    STATE_TRAILER_START = 8
    STATE_TRAILER_LINE = 9
    STATE_TRAILER_END_LF = 10
    STATE_TUNNEL = 11        # after CONNECT or Upgrade: the bytes are no longer HTTP/1
    STATE_UNREADABLE = 12


cdef inline int hex_value(uint8_t c) noexcept nogil:
    if b'0' <= c <= b'9':
        return c - 48         # '0'
    if b'a' <= c <= b'f':
        return c - 87         # 'a' - 10
    if b'A' <= c <= b'F':
        return c - 55         # 'A' - 10
    return -1


cdef inline Py_ssize_t scan_head_end(const uint8_t* head, Py_ssize_t scanned, Py_ssize_t length,
                                     uint32_t* line_start) noexcept nogil:
    """find_head_end over a head buffer that grows: only the bytes after `scanned` are read,
    line_start carrying where the last incomplete line began (each byte is read once, however
    small the segments)."""
    cdef Py_ssize_t i, start = line_start[0]
    for i in range(scanned, length):
        if head[i] != b'\n':
            continue
        if start > 0 and (i == start or (i == start + 1 and head[start] == b'\r')):
            return i + 1
        start = i + 1
    line_start[0] = <uint32_t>start
    return -1


cdef inline void key_of(const Packet* packet, FlowKey* key) noexcept nogil:
    memset(key, 0, sizeof(FlowKey))
    key.ip_version = packet.ip_version
    memcpy(key.src, packet.src, 16)
    memcpy(key.dst, packet.dst, 16)
    key.sport = packet.sport
    key.dport = packet.dport


cdef class HttpFollower:
    """Per-flow framing state of followed plain-HTTP connections, in a fixed table
    (max_flows, rounded up to a power of two; an idle flow's slot is taken by a new flow
    only when its bucket is full or it has been idle for flow_timeout seconds)."""

    def __cinit__(self, Py_ssize_t max_flows=65536, double flow_timeout=900.0):
        cdef Py_ssize_t capacity = SLOT_PROBES
        if max_flows < 1 or flow_timeout <= 0:
            raise ValueError("HttpFollower limits must be positive")
        while capacity < max_flows:
            capacity <<= 1
        self.slots = <HttpFlow*>calloc(capacity, sizeof(HttpFlow))
        if self.slots == NULL:
            raise MemoryError()
        self.slot_mask = <uint32_t>(capacity - 1)
        self.flow_timeout = flow_timeout

    def __dealloc__(self):
        cdef uint32_t i
        if self.slots != NULL:
            for i in range(self.slot_mask + 1):
                free(self.slots[i].head)
            free(self.slots)

    cdef void drop_head(self, HttpFlow* flow) noexcept nogil:
        if flow.head != NULL:
            free(flow.head)
            flow.head = NULL
            self.heads_buffered -= 1
        flow.head_len = 0

    cdef HttpFlow* find(self, const Packet* packet, bint claim, double now) noexcept nogil:
        """The packet's flow; with claim, a slot for it (a free one, an expired one, else the
        bucket's oldest) when it has none."""
        cdef FlowKey key
        cdef uint64_t hash
        cdef HttpFlow* slot
        cdef HttpFlow* victim = NULL
        cdef int i
        key_of(packet, &key)
        hash = ef_hash_flow(<uint64_t>key.ip_version | (<uint64_t>key.sport << 16) | (<uint64_t>key.dport << 32),
                            key.src, key.dst) | 1
        for i in range(SLOT_PROBES):
            slot = &self.slots[(hash + i) & self.slot_mask]
            if slot.hash == hash and memcmp(&slot.key, &key, sizeof(FlowKey)) == 0:
                slot.last_seen = now
                return slot
        if not claim:
            return NULL
        for i in range(SLOT_PROBES):
            slot = &self.slots[(hash + i) & self.slot_mask]
            if slot.hash == 0 or now - slot.last_seen > self.flow_timeout:
                victim = slot
                break
            if victim == NULL or slot.last_seen < victim.last_seen:
                victim = slot
        else:
            self.evicted += 1
        self.drop_head(victim)
        victim.hash = hash
        victim.key = key
        victim.last_seen = now
        return victim

    cdef void start(self, const Packet* packet, uint32_t seq, const NameResult* head, double now) noexcept nogil:
        """Follow the packet's flow from stream byte seq, which comes right after `head` (the
        request the flow was decided on; NULL: seq is a message boundary)."""
        cdef HttpFlow* flow = self.find(packet, True, now)
        self.started += 1
        self.drop_head(flow)
        flow.next_seq = seq
        flow.state = STATE_HEAD
        if head != NULL:
            self.after_head(flow, head)

    cdef void stop(self, const Packet* packet, double now) noexcept nogil:
        cdef HttpFlow* flow = self.find(packet, False, now)
        if flow != NULL:
            self.drop_head(flow)
            flow.hash = 0

    cdef void after_head(self, HttpFlow* flow, const NameResult* head) noexcept nogil:
        """The state after a request head, by its body's framing."""
        flow.hex_digits = 0
        flow.remaining = 0
        if head.body == BODY_NONE:
            flow.state = STATE_HEAD
        elif head.body == BODY_LENGTH:
            flow.remaining = head.body_length
            flow.state = STATE_BODY if head.body_length else STATE_HEAD
        elif head.body == BODY_CHUNKED:
            flow.state = STATE_CHUNK_SIZE
        elif head.body == BODY_TUNNEL:
            flow.state = STATE_TUNNEL
        else:
            flow.state = STATE_UNREADABLE

    cdef FollowStatus feed(self, const Packet* packet, const uint8_t* data, Py_ssize_t length, uint32_t seq,
                           NameResult* result, double now) noexcept nogil:
        """Reads the packet's stream bytes (from seq) up to the end of the next request head:
        FOLLOW_HEAD with it in result (call again for the rest of the packet), FOLLOW_END
        when none is left."""
        cdef HttpFlow* flow = self.find(packet, False, now)
        cdef int32_t ahead
        cdef Py_ssize_t skip, position = 0, take, end
        cdef FollowStatus status
        if flow == NULL:
            return FOLLOW_UNKNOWN
        if flow.state == STATE_UNREADABLE:
            return FOLLOW_UNREADABLE
        if flow.state == STATE_TUNNEL:
            return FOLLOW_END
        ahead = <int32_t>(seq - flow.next_seq)
        if ahead > 0:
            self.gaps += 1
            return FOLLOW_GAP
        skip = -<Py_ssize_t>ahead
        if skip >= length:
            return FOLLOW_END                  # bytes already read: a retransmission
        data += skip
        length -= skip
        status = FOLLOW_END
        while position < length and status == FOLLOW_END:
            if flow.state == STATE_BODY or flow.state == STATE_CHUNK_DATA:
                take = <Py_ssize_t>min(<uint64_t>(length - position), flow.remaining)
                position += take
                flow.remaining -= <uint64_t>take
                if flow.remaining == 0:
                    flow.state = STATE_HEAD if flow.state == STATE_BODY else STATE_CHUNK_DATA_CR
            elif flow.state == STATE_HEAD:
                status = self.read_head(flow, data, length, &position, result)
            elif flow.state == STATE_TUNNEL:
                position = length
            else:
                if not self.read_chunk_byte(flow, data[position]):
                    flow.state = STATE_UNREADABLE
                    status = FOLLOW_UNREADABLE
                position += 1
        flow.next_seq = seq + <uint32_t>(skip + position)
        if status == FOLLOW_UNREADABLE:
            self.unreadable += 1
            self.drop_head(flow)
        return status

    cdef FollowStatus read_head(self, HttpFlow* flow, const uint8_t* data, Py_ssize_t length,
                                Py_ssize_t* position, NameResult* result) noexcept nogil:
        """In STATE_HEAD: the next request head, parsed in place when one packet holds all of
        it, else gathered in the flow's head buffer."""
        cdef Py_ssize_t start = position[0], end, kept, taken
        cdef ParseStatus parsed
        cdef uint8_t c
        if flow.head_len == 0:
            c = data[start]
            if c == b'\r' or c == b'\n':       # empty lines before a request line (RFC 9112 2.2)
                position[0] = start + 1
                return FOLLOW_END
            if not (b'A' <= c <= b'Z'):
                flow.state = STATE_UNREADABLE
                position[0] = length
                return FOLLOW_UNREADABLE
            end = find_head_end(data + start, length - start)
            if end >= 0:
                position[0] = start + end
                return self.head_done(flow, parse_http_head(data + start, end, result), result)
            if self.heads_buffered >= HEADS_BUFFERED_MAX or length - start > HEAD_MAX:
                flow.state = STATE_UNREADABLE
                position[0] = length
                return FOLLOW_UNREADABLE
            flow.head = <uint8_t*>malloc(HEAD_MAX)
            if flow.head == NULL:
                flow.state = STATE_UNREADABLE
                position[0] = length
                return FOLLOW_UNREADABLE
            self.heads_buffered += 1
            memcpy(flow.head, data + start, length - start)
            flow.head_len = <uint32_t>(length - start)
            flow.line_start = 0
            scan_head_end(flow.head, 0, flow.head_len, &flow.line_start)
            position[0] = length
            return FOLLOW_END
        kept = flow.head_len
        taken = min(length - start, <Py_ssize_t>HEAD_MAX - kept)
        memcpy(flow.head + kept, data + start, taken)
        flow.head_len += <uint32_t>taken
        end = scan_head_end(flow.head, kept, flow.head_len, &flow.line_start)
        if end < 0:
            position[0] = start + taken
            if flow.head_len >= HEAD_MAX:
                flow.state = STATE_UNREADABLE
                return FOLLOW_UNREADABLE
            return FOLLOW_END
        position[0] = start + (end - kept)
        parsed = parse_http_head(flow.head, end, result)
        self.drop_head(flow)
        return self.head_done(flow, parsed, result)

    cdef FollowStatus head_done(self, HttpFlow* flow, ParseStatus parsed, const NameResult* result) noexcept nogil:
        if parsed != PARSE_DONE:
            flow.state = STATE_UNREADABLE
            return FOLLOW_UNREADABLE
        self.heads += 1
        self.after_head(flow, result)
        return FOLLOW_HEAD

    cdef bint read_chunk_byte(self, HttpFlow* flow, uint8_t c) noexcept nogil:
        """One byte of chunked framing outside chunk data (RFC 9112 7.1); False when no
        server would read it so."""
        cdef int digit
        if flow.state == STATE_CHUNK_SIZE:
            digit = hex_value(c)
            if digit >= 0:
                flow.hex_digits += 1
                flow.remaining = flow.remaining * 16 + <uint64_t>digit
                return flow.hex_digits <= MAX_HEX_DIGITS
            if flow.hex_digits == 0:
                return False
            if c == b';':
                flow.state = STATE_CHUNK_EXT
            elif c == b'\r':
                flow.state = STATE_CHUNK_SIZE_LF
            elif c == b'\n':
                self.chunk_size_done(flow)
            else:
                return False
        elif flow.state == STATE_CHUNK_EXT:
            if c == b'\n':
                self.chunk_size_done(flow)
        elif flow.state == STATE_CHUNK_SIZE_LF:
            if c != b'\n':
                return False
            self.chunk_size_done(flow)
        elif flow.state == STATE_CHUNK_DATA_CR:
            if c == b'\r':
                flow.state = STATE_CHUNK_DATA_LF
            elif c == b'\n':
                flow.state = STATE_CHUNK_SIZE
            else:
                return False
        elif flow.state == STATE_CHUNK_DATA_LF:
            if c != b'\n':
                return False
            flow.state = STATE_CHUNK_SIZE
        elif flow.state == STATE_TRAILER_START:
            if c == b'\r':
                flow.state = STATE_TRAILER_END_LF
            elif c == b'\n':
                flow.state = STATE_HEAD
            else:
                flow.state = STATE_TRAILER_LINE
        elif flow.state == STATE_TRAILER_END_LF:
            if c != b'\n':
                return False
            flow.state = STATE_HEAD
        elif flow.state == STATE_TRAILER_LINE:
            if c == b'\n':
                flow.state = STATE_TRAILER_START
        return True

    cdef void chunk_size_done(self, HttpFlow* flow) noexcept nogil:
        flow.hex_digits = 0
        flow.state = STATE_CHUNK_DATA if flow.remaining else STATE_TRAILER_START

    @property
    def stats(self):
        """Connections followed, request heads read, segments dropped for a gap, streams
        no server would read as HTTP, followed flows evicted for lack of room."""
        return {"http_followed": self.started, "http_heads": self.heads, "http_gaps": self.gaps,
                "http_unreadable": self.unreadable, "http_evicted": self.evicted}
