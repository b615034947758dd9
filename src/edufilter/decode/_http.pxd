# The HTTP follower: finds every request head in the client stream of an allowed plain-HTTP
# connection (kept alive, pipelined), so each one is judged, not only the first.

from libc.stdint cimport uint8_t, uint32_t, uint64_t

from edufilter._fastpath cimport FlowKey, NameResult, Packet, ParseStatus

cpdef enum FollowStatus:
    FOLLOW_END = 0           # the packet's bytes are all consumed: no (further) head in it
    FOLLOW_HEAD = 1          # a complete request head, parsed into the result: feed again
    FOLLOW_GAP = 2           # the packet starts past the next expected byte: drop, TCP resends
    FOLLOW_UNREADABLE = 3    # bytes no server reads as a request or its framing
    FOLLOW_UNKNOWN = 4       # no state for this flow (never started, or evicted)

cdef struct HttpFlow:
    uint64_t hash            # 0 marks an empty slot
    FlowKey key
    double last_seen
    uint32_t next_seq        # the client stream byte expected next
    uint8_t state            # FollowState
    uint8_t hex_digits       # of the chunk-size line being read
    uint64_t remaining       # body or chunk bytes still to skip
    uint32_t head_len        # bytes of a request head that spans segments, in head
    uint32_t line_start      # where head's last incomplete line starts (scanned up to head_len)
    uint8_t* head

cdef class HttpFollower:
    cdef HttpFlow* slots
    cdef uint32_t slot_mask
    cdef Py_ssize_t heads_buffered
    cdef double flow_timeout
    cdef uint64_t started
    cdef uint64_t heads
    cdef uint64_t gaps
    cdef uint64_t unreadable
    cdef uint64_t evicted

    cdef void drop_head(self, HttpFlow* flow) noexcept nogil
    cdef void after_head(self, HttpFlow* flow, const NameResult* head) noexcept nogil
    cdef FollowStatus read_head(self, HttpFlow* flow, const uint8_t* data, Py_ssize_t length,
                                Py_ssize_t* position, NameResult* result) noexcept nogil
    cdef FollowStatus head_done(self, HttpFlow* flow, ParseStatus parsed, const NameResult* result) noexcept nogil
    cdef bint read_chunk_byte(self, HttpFlow* flow, uint8_t c) noexcept nogil
    cdef void chunk_size_done(self, HttpFlow* flow) noexcept nogil
    cdef HttpFlow* find(self, const Packet* packet, bint claim, double now) noexcept nogil
    cdef void start(self, const Packet* packet, uint32_t seq, const NameResult* head, double now) noexcept nogil
    cdef void stop(self, const Packet* packet, double now) noexcept nogil
    cdef FollowStatus feed(self, const Packet* packet, const uint8_t* data, Py_ssize_t length, uint32_t seq,
                           NameResult* result, double now) noexcept nogil
