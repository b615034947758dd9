# The typed surface of the capture stage: one NFQUEUE queue, batched receive and batched
# verdicts without the GIL, for cimport by the enforce loop (enforce/_enforce.pyx).

from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t
from posix.uio cimport iovec

cdef extern from "<sys/socket.h>" nogil:
    cdef struct msghdr:
        void* msg_name
        unsigned int msg_namelen
        iovec* msg_iov
        size_t msg_iovlen
        void* msg_control
        size_t msg_controllen
        int msg_flags

    cdef struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len

cdef extern from "<linux/netlink.h>" nogil:
    cdef struct sockaddr_nl:
        unsigned short nl_family
        unsigned short nl_pad
        uint32_t nl_pid
        uint32_t nl_groups

# Verdicts (linux/netfilter.h). NF_REPEAT sends the packet through its hook again, so a
# rule can act on the mark the verdict set.
cdef enum:
    NF_DROP = 0
    NF_ACCEPT = 1
    NF_REPEAT = 4

# NFQA_SKB_INFO bits (linux/netfilter/nfnetlink_queue.h).
cdef enum:
    SKB_CSUM_NOT_READY = 1       # checksum left for offload: the transport checksum is partial
    SKB_GSO = 2                  # a GSO packet, larger than the device MTU
    SKB_CSUM_NOT_VERIFIED = 4

# One queued packet. payload points into the queue's receive slots: valid until the next
# receive on the same PacketQueue.
cdef struct QueuedPacket:
    uint32_t packet_id
    uint8_t hook                 # NF_INET_PRE_ROUTING 0 ... NF_INET_POST_ROUTING 4
    uint8_t family               # NFPROTO_IPV4 2, NFPROTO_IPV6 10
    uint16_t hw_protocol         # host order: 0x0800 IPv4, 0x86DD IPv6
    uint32_t mark
    uint32_t indev               # interface indexes; 0 when the hook has none
    uint32_t outdev
    uint32_t skb_info            # SKB_* bits
    uint8_t hwaddr_len           # 0: no source MAC (e.g. locally generated)
    uint8_t hwaddr[8]
    const uint8_t* payload       # the IP packet, from its IP header
    uint32_t payload_len
    uint32_t cap_len             # the packet's real length; > payload_len when copied short

# One verdict. A payload replaces the packet (the whole IP packet, checksums complete:
# the kernel no longer offloads them); it must stay valid until send_verdicts returns.
cdef struct Verdict:
    uint32_t packet_id
    uint32_t verdict             # NF_ACCEPT, NF_DROP or NF_REPEAT
    uint8_t set_mark
    uint32_t mark
    const uint8_t* payload       # NULL: the packet goes on unchanged
    uint32_t payload_len

cdef struct QueueStats:
    uint64_t packets             # packets received
    uint64_t receive_calls       # receive() calls that returned packets
    uint64_t verdicts            # verdicts given
    uint64_t verdict_messages    # NFQNL_MSG_VERDICT messages sent
    uint64_t batch_messages      # NFQNL_MSG_VERDICT_BATCH messages sent
    uint64_t send_calls          # sendmsg() calls
    uint64_t send_errors
    uint64_t enobufs             # the socket overran (only without NETLINK_NO_ENOBUFS)
    uint64_t kernel_errors       # error replies, e.g. a verdict for an unknown packet id
    int32_t last_kernel_error    # errno of the last error reply
    uint64_t truncated_messages  # a message longer than its receive slot
    uint64_t malformed_messages  # a message without a readable packet header
    uint64_t gso_packets
    uint64_t checksum_not_ready

cdef class PacketQueue:
    cdef readonly int queue_num
    cdef readonly uint32_t copy_range
    cdef readonly uint32_t max_length
    cdef readonly bint fail_open
    cdef readonly bint batch_verdicts
    cdef readonly int receive_buffer_bytes   # as granted by the kernel
    cdef int fd
    cdef uint32_t portid
    cdef QueueStats counters
    # Packets received and not yet given a verdict: a batch verdict covers every queued
    # id up to its own, so batches are only used when nothing else is held.
    cdef uint64_t held
    cdef int receive_timeout_ms  # SO_RCVTIMEO as last set (0: not yet)
    # Receive slots: one buffer, header and address per message of a recvmmsg burst.
    cdef int slot_count
    cdef size_t slot_size
    cdef uint8_t* slot_memory
    cdef mmsghdr* messages
    cdef iovec* slot_iovecs
    cdef sockaddr_nl* sources
    # Verdict messages are written here; replaced payloads are sent from the caller's
    # memory through their own iovecs.
    cdef uint8_t* send_headers
    cdef iovec* send_iovecs
    cdef int send_iovec_count
    cdef size_t send_header_used
    cdef size_t send_bytes
    cdef size_t send_limit       # bytes per sendmsg, below the socket's send buffer
    # The Python surface: copies of the last receive_batch and the ids it still owes.
    cdef QueuedPacket* python_slots
    cdef set pending_ids

    cdef int set_receive_timeout(self, int timeout_ms) noexcept nogil
    cdef int receive(self, QueuedPacket* out, int max_packets, int timeout_ms) noexcept nogil
    cdef int send_verdicts(self, const Verdict* verdicts, int count) noexcept nogil
    cdef int append_verdict(self, uint16_t message_type, const Verdict* verdict) noexcept nogil
    cdef void add_send_part(self, const void* base, size_t length) noexcept nogil
    cdef int flush_verdicts(self) noexcept nogil
    cdef int serve_fixed(self, Verdict* verdicts, uint32_t verdict, bint set_mark, uint32_t mark,
                         double until, uint64_t* served) noexcept nogil
