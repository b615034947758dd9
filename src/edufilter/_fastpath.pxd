# The typed surface of the fast path: C structs and nogil functions that other
# extensions (the NFQUEUE loop) cimport, plus the fields of FlowExtractor.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

# What a packet carries, as far as a policy is concerned.
cpdef enum NameKind:
    KIND_NONE = 0
    KIND_DNS = 1
    KIND_SNI = 2
    KIND_HTTP_HOST = 3
    KIND_QUIC_INITIAL = 4   # a client Initial: the QUIC decoder finishes it in Python

# Outcome of decoding the IP and transport headers.
cpdef enum DecodeStatus:
    DECODE_OK = 0
    DECODE_TRUNCATED = 1     # the buffer ends before a header says it should
    DECODE_MALFORMED = 2     # a header field is impossible
    DECODE_FRAGMENT = 3      # a non-first fragment: no transport header to read
    DECODE_OTHER = 4         # not TCP or UDP (ICMP, ESP, ...)

# Outcome of parsing an application-layer prefix (one packet or a reassembled stream).
cpdef enum ParseStatus:
    PARSE_DONE = 0           # finished: a name was found, or there is none to find
    PARSE_NEED_MORE = 1      # the prefix is a valid start; more stream bytes are needed
    PARSE_MALFORMED = 2

# How an HTTP/1.x request's body is framed (RFC 9112 6), so the next request head is found.
cpdef enum BodyFraming:
    BODY_NONE = 0            # no Content-Length nor Transfer-Encoding: the next head follows
    BODY_LENGTH = 1          # Content-Length bytes
    BODY_CHUNKED = 2         # Transfer-Encoding: chunked
    BODY_UNREADABLE = 3      # both, two lengths, another coding, a malformed value: servers differ
    BODY_TUNNEL = 4          # CONNECT or Upgrade: after the server's answer, no HTTP/1 follows

# Why a flow's stream cannot be trusted to show what the server reads (bits of FlowSlot.evasion).
cpdef enum Evasion:
    EVASION_NONE = 0
    EVASION_DECOY = 1        # a segment the server would drop (low TTL, bad checksum, MD5, no ACK, far seq)
    EVASION_OVERLAP = 2      # a segment overlapping held bytes with different bytes
    EVASION_URGENT = 4       # urgent data inside the ClientHello or request head
    EVASION_UNFINISHED = 8   # still incomplete at the byte, time or packet bound
    EVASION_HOLES = 16       # more holes in the stream prefix than any real client leaves

# What the enforcer learns about a flow past the kernel's packet bound.
cpdef enum Handshake:
    HANDSHAKE_NONE = 0       # no ClientHello or request head under way: the group's default decides
    HANDSHAKE_PENDING = 1    # one is under way within the bounds: keep queueing the flow
    HANDSHAKE_UNFINISHED = 2 # one reached a bound unfinished (flagged EVASION_UNFINISHED)

cdef struct Packet:
    uint8_t ip_version
    uint8_t protocol
    uint8_t tcp_flags
    uint8_t first_fragment   # the first of several IPv4/IPv6 fragments: payload is partial
    uint8_t src[16]
    uint8_t dst[16]
    uint16_t sport
    uint16_t dport
    uint32_t seq
    uint8_t hop_limit        # IPv4 TTL or IPv6 hop limit
    const uint8_t* transport # the TCP/UDP header, transport_len bytes to the datagram's end
    Py_ssize_t transport_len
    const uint8_t* payload
    Py_ssize_t payload_len

cdef struct NameResult:
    uint8_t kind
    uint8_t ech               # the ClientHello carried encrypted_client_hello
    uint8_t invalid_name      # a name was present but is not a valid host name
    uint16_t dns_qtype
    int name_len
    char name[256]
    int path_len              # HTTP: the request target's path, cut at 255 bytes
    char path[256]
    # A second, different name for the same flow (two SNI entries or server_name extensions,
    # two Host headers, an absolute-form target naming another host than Host): both are
    # judged and the stricter decision wins; a circumvention attempt for shielded groups.
    uint8_t conflict
    int alt_name_len
    char alt_name[256]
    int head_len              # HTTP: bytes of the request head, its blank line included
    uint8_t body              # HTTP: BodyFraming of the request
    uint64_t body_length      # HTTP: Content-Length

cdef DecodeStatus decode_ip(const uint8_t* data, Py_ssize_t length, Packet* packet) noexcept nogil
cdef ParseStatus parse_dns_query(const uint8_t* msg, Py_ssize_t length, NameResult* result) noexcept nogil
cdef ParseStatus parse_tls_stream(const uint8_t* stream, Py_ssize_t length, uint8_t* scratch,
                                  Py_ssize_t scratch_size, NameResult* result) noexcept nogil
cdef ParseStatus parse_client_hello_message(const uint8_t* msg, Py_ssize_t length,
                                            NameResult* result) noexcept nogil
cdef ParseStatus parse_http_head(const uint8_t* head, Py_ssize_t length, NameResult* result) noexcept nogil
cdef int normalise_name_into(const uint8_t* raw, Py_ssize_t length, char* out) noexcept nogil
cdef Py_ssize_t find_head_end(const uint8_t* data, Py_ssize_t length) noexcept nogil

cdef struct FlowKey:
    uint8_t ip_version
    uint8_t src[16]
    uint8_t dst[16]
    uint16_t sport
    uint16_t dport

# A client->server stream prefix being reassembled. Filled byte ranges are kept as a
# short sorted list of intervals; more holes than that is not a real ClientHello.
cdef enum:
    MAX_STREAM_INTERVALS = 16

cdef struct StreamBuffer:
    uint32_t interval_start[16]
    uint32_t interval_end[16]
    int interval_count
    uint32_t parsed_upto     # contiguous bytes already handed to a parser
    double started           # the handshake's time bound counts from here
    uint32_t bound_packets   # packets seen past the kernel's packet bound, name still pending
    uint32_t bound_ack       # the client's ACK number at the packet bound, before any client byte
    uint8_t bound_ack_known
    uint8_t* data

cdef struct FlowSlot:
    uint64_t hash            # 0 marks an empty slot
    FlowKey key
    double last_seen
    uint32_t base_seq        # sequence number of the first stream byte
    uint8_t state
    uint8_t base_known       # base_seq comes from the SYN, not a guess from data
    uint8_t syn_hop_limit    # the SYN's TTL/hop limit (0: no SYN seen): less is a decoy's
    uint8_t evasion          # Evasion bits seen while the name was being looked for
    StreamBuffer* stream     # (the two bytes above fill padding: a slot stays 72 bytes)

cdef struct ExtractorStats:
    uint64_t packets
    uint64_t ipv4
    uint64_t ipv6
    uint64_t tcp
    uint64_t udp
    uint64_t truncated
    uint64_t malformed
    uint64_t fragments
    uint64_t other_protocol
    uint64_t names_dns
    uint64_t names_sni
    uint64_t names_http_host
    uint64_t quic_initials
    uint64_t invalid_names
    uint64_t ech
    uint64_t flows_tracked
    uint64_t flows_evicted
    uint64_t flows_expired
    uint64_t streams_buffered
    uint64_t stream_overflows
    uint64_t stream_pool_full
    uint64_t segments_outside_window
    uint64_t decoys_low_hop_limit
    uint64_t decoys_bad_checksum
    uint64_t decoys_outside_window
    uint64_t decoys_md5
    uint64_t decoys_no_ack
    uint64_t overlaps_differing
    uint64_t urgent_data
    uint64_t stream_holes_exceeded
    uint64_t handshakes_unfinished

cdef class FlowExtractor:
    cdef FlowSlot* slots
    cdef uint32_t slot_mask
    cdef Py_ssize_t buffer_size
    cdef Py_ssize_t max_streams
    cdef Py_ssize_t streams_in_use
    cdef double flow_timeout
    cdef double handshake_timeout
    cdef uint32_t max_handshake_packets
    cdef bint verify_checksums   # set by the owner: verify TCP checksums of inspected segments
    cdef double last_sweep
    cdef uint8_t* scratch
    cdef ExtractorStats counters
    cdef NameResult result
    cdef Packet packet
    cdef DecodeStatus decoded    # of the last packet
    cdef bint settled            # the last packet's flow is done looking for a name (none found)
    # An HTTP request head just found: the client stream bytes after it that this packet (or
    # the reassembled prefix) already holds, and the sequence number of the first of them, so
    # the HTTP follower (decode/_http.pyx) starts exactly where the head ends.
    cdef const uint8_t* http_rest
    cdef Py_ssize_t http_rest_len
    cdef uint32_t http_rest_seq

    cdef bint checksum_ready     # the last packet's TCP checksum is complete (not offloaded)
    cdef uint8_t evasion         # Evasion bits of the last packet's flow, while its name was pending

    cdef void release(self, FlowSlot* slot) noexcept nogil
    cdef FlowSlot* lookup(self, const FlowKey* key, uint64_t hash, double now) noexcept nogil
    cdef FlowSlot* claim(self, const FlowKey* key, uint64_t hash, double now) noexcept nogil
    cdef void reset_inspection(self, FlowSlot* slot) noexcept nogil
    cdef void sweep_expired_streams(self, double now) noexcept nogil
    cdef bint start_stream(self, FlowSlot* slot, double now) noexcept nogil
    cdef void add_segment(self, FlowSlot* slot, uint32_t seq, const uint8_t* data,
                          Py_ssize_t length) noexcept nogil
    cdef int process(self, const uint8_t* data, Py_ssize_t length, double now) noexcept nogil
    cdef void keep_http_rest(self, const uint8_t* stream, Py_ssize_t length, uint32_t stream_seq,
                             bint copy) noexcept nogil

    cdef bint is_decoy(self, FlowSlot* slot) noexcept nogil
    cdef void flag(self, FlowSlot* slot, uint8_t evasion) noexcept nogil
    cdef Handshake handshake_state(self, double now) noexcept nogil
    cdef int count_name(self) noexcept nogil
    cdef int settle(self, FlowSlot* slot) noexcept nogil
    cdef int settle_parsed(self, FlowSlot* slot, ParseStatus status) noexcept nogil
    cdef int overflow(self, FlowSlot* slot) noexcept nogil
    cdef object make_extraction(self, int kind)
