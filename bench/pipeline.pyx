# cython: language_level=3, boundscheck=False, wraparound=False
"""Bench only: a worker's per-packet work without the queue, for the data-path benchmarks.

The Enforcer needs a bound NFQUEUE queue, so this loop does what Enforcer.classify does for
each packet, nogil, over a list of packets instead: decode and extract (FlowExtractor), the
client's group, then the decision — on the name (DNS, SNI, HTTP Host), or on the destination
address alone for a flow that settled without one. The decided-flow table, marks and the
verdict send are left out. Built by bench/conftest.py at run time.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport int64_t, uint8_t
from libc.stdlib cimport free, malloc

from edufilter._classify cimport (
    ACTION_ALLOW,
    ACTION_MONITOR,
    CLIENT_BY_DEFAULT,
    NO_RULE,
    Classifier,
    Decision,
)
from edufilter._fastpath cimport (
    DECODE_OK,
    Packet,
    decode_ip,
    KIND_DNS,
    KIND_HTTP_HOST,
    KIND_NONE,
    KIND_QUIC_INITIAL,
    KIND_SNI,
    FlowExtractor,
)

cdef enum:
    PROTO_UDP = 17


cdef struct Input:
    const uint8_t* data
    Py_ssize_t length


cdef Input* inputs_of(list packets) except NULL:
    cdef Py_ssize_t i, n = len(packets)
    cdef Input* inputs = <Input*>malloc(max(1, n) * sizeof(Input))
    if inputs == NULL:
        raise MemoryError()
    for i in range(n):
        packet = packets[i]
        if type(packet) is not bytes:
            free(inputs)
            raise TypeError("packets must be bytes")
        inputs[i].data = <const uint8_t*>PyBytes_AS_STRING(packet)
        inputs[i].length = PyBytes_GET_SIZE(packet)
    return inputs


cdef list quic_initials(Input* inputs, const int* indices, Py_ssize_t count):
    """(UDP payload, client address, client port) of each QUIC client Initial: what the
    worker hands its slow path to decrypt."""
    cdef Packet packet
    cdef Py_ssize_t i
    found = []
    for i in range(count):
        decode_ip(inputs[indices[i]].data, inputs[indices[i]].length, &packet)
        found.append(((<const char*>packet.payload)[:packet.payload_len],
                      (<const char*>packet.src)[:4 if packet.ip_version == 4 else 16], packet.sport))
    return found


def run(FlowExtractor extractor, list packets, double now, Classifier classifier=None):
    """Decode and extract every packet, and with a classifier decide it: (names found, names a
    rule blocks, flows decided without a name, the QUIC client Initials left for the Python
    QUIC decoder, as the worker leaves them to its slow path)."""
    cdef Input* inputs = inputs_of(packets)
    cdef int* quic = <int*>malloc(max(1, len(packets)) * sizeof(int))
    cdef Py_ssize_t i, n = len(packets), names = 0, blocked = 0, unnamed = 0, initials = 0
    cdef int kind, group, how, width
    cdef bint deciding = classifier is not None
    cdef Decision decision
    if quic == NULL:
        free(inputs)
        raise MemoryError()
    try:
        with nogil:
            for i in range(n):
                kind = extractor.process(inputs[i].data, inputs[i].length, now)
                if kind == KIND_QUIC_INITIAL:
                    quic[initials] = <int>i
                    initials += 1
                    continue
                if kind != KIND_NONE:
                    names += 1
                if not deciding or extractor.decoded != DECODE_OK:
                    continue
                width = 4 if extractor.packet.ip_version == 4 else 16
                how = CLIENT_BY_DEFAULT
                group = classifier.group_for(NULL, 0, extractor.packet.src, width, &how)
                if kind == KIND_DNS or kind == KIND_SNI or kind == KIND_HTTP_HOST:
                    decision = classifier.decide_flow(
                        group, <const uint8_t*>extractor.result.name, extractor.result.name_len,
                        NULL if kind == KIND_DNS else extractor.packet.dst, width, <int64_t>now)
                    if decision.action != NO_RULE and decision.action != ACTION_ALLOW and \
                            decision.action != ACTION_MONITOR:
                        blocked += 1
                elif extractor.settled or extractor.packet.protocol == PROTO_UDP:
                    decision = classifier.decide_flow(group, NULL, 0, extractor.packet.dst, width, <int64_t>now)
                    unnamed += 1
        return names, blocked, unnamed, quic_initials(inputs, quic, initials)
    finally:
        free(inputs)
        free(quic)
