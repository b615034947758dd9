# What the data path's Cython modules share about the wire: byte order, IP protocol numbers,
# the ports and DNS types they judge by, and the verdict codes carried in packet and conntrack
# marks. The codes and DNS types are cpdef enums, so Python reads the same values
# (edufilter._wire.Code, DnsType; rules/marks.py lays the codes into the mark).

from libc.stdint cimport uint8_t, uint16_t, uint32_t

# Codes in the mark field (rules/marks.py: code = (mark & mask) >> shift). A conntrack mark
# holds a flow's decision; a packet mark one packet's state.
cpdef enum Code:
    CODE_UNDECIDED = 0
    CODE_ALLOW = 1
    CODE_REJECT = 2         # TCP reset, ICMP administratively prohibited otherwise
    CODE_DROP = 3
    # packet mark: let through once, the flow still undecided (a SYN, a DNS query, a fragment).
    # Workers repeat such packets (NF_REPEAT) as they do decided ones, and the rules return at
    # once; either way the school's own chains follow ours.
    CODE_PASS = 4
    CODE_BOUND = 5          # packet mark: an undecided flow past the inspection bound; the worker decides now
    CODE_SAFE_SEARCH = 6    # conntrack mark: queue this DNS flow's answers so they can be rewritten
    CODE_INJECTED = 7       # packet mark: sent by edufilter itself, never queued
    # conntrack mark: an allowed plain-HTTP flow whose client data (packets carrying bytes) is
    # still queued, so every request on the kept-alive connection is judged; the server's bytes
    # never are. Packet mark: the rules queue such a packet with it, and a worker repeats it with it.
    CODE_HTTP_FOLLOW = 8
    # packet mark: a TCP segment from the LAN that conntrack found invalid (a bad checksum, no ACK,
    # outside the window: no entry, so no conntrack mark). Queued so a decoy among them counts as
    # evasion; a worker passes it, and such a segment alone never decides a flow.
    CODE_INVALID = 9

cdef enum:
    PROTO_TCP = 6
    PROTO_UDP = 17
    DNS_PORT = 53
    HTTP_PORT = 80
    NTP_PORT = 123
    HTTPS_PORT = 443
    QUIC_PORT = 443
    DOT_PORT = 853

# Service-binding record types (RFC 9460): where browsers learn ECH keys and encrypted DNS.
cpdef enum DnsType:
    DNS_TYPE_SVCB = 64
    DNS_TYPE_HTTPS = 65


cdef inline uint16_t be16(const uint8_t* p) noexcept nogil:
    return (<uint16_t>p[0] << 8) | p[1]

cdef inline uint32_t be24(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 16) | (<uint32_t>p[1] << 8) | p[2]

cdef inline uint32_t be32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]

cdef inline void put_be32(uint8_t* p, uint32_t value) noexcept nogil:
    p[0] = value >> 24
    p[1] = value >> 16
    p[2] = value >> 8
    p[3] = value
