# cython: language_level=3
"""The capture stage: one NFQUEUE queue on a netfilter netlink socket, with batched receive
(recvmmsg) and batched verdicts (one sendmsg per batch), both without the GIL.

Why each setting is there:
- Copy mode "packet", copy range (default 0xffff, the kernel caps it at 65531): the fast path
  reads the IP and transport headers and the first payload bytes (DNS query, ClientHello,
  HTTP head). The default copies even a 64 KiB GSO packet whole; a smaller range copies less
  and NFQA_CAP_LEN (cap_len) still tells the real length.
- Queue max length (default 8192, the kernel's is 1024): how many packets may wait for a
  verdict. A longer burst overflows: dropped, or accepted uninspected with fail-open.
- NFQA_CFG_F_FAIL_OPEN (fail_open): when the queue is full, or the socket cannot take the
  packet, the kernel accepts it instead of dropping it (the failure mode is a setting; with
  no listener at all, the rule's --queue-bypass decides). Fail-open accepts are counted
  nowhere in the kernel; queue_dropped and user_dropped count the fail-closed drops.
- NFQA_CFG_F_GSO (always on): without it the kernel segments every GSO packet in software
  before queueing it (one queue round trip per segment) and completes partial checksums.
  With it a GSO packet arrives whole (SKB_GSO), and a packet marked SKB_CSUM_NOT_READY carries
  a partial transport checksum: read it, never verify it. A replaced payload must carry
  complete checksums, since the kernel stops offloading them for that packet.
- NFQA_CFG_F_CONNTRACK (off by default): conntrack attributes cost time on every message;
  the rules hand the flow state over in marks instead.
- Receive buffer (default 2 KiB per queue slot): SO_RCVBUFFORCE ignores net.core.rmem_max
  (it needs CAP_NET_ADMIN, which binding a queue needs anyway); SO_RCVBUF is the fallback.
- NETLINK_NO_ENOBUFS: without it an overrun raises ENOBUFS on the next receive and the kernel
  stops delivering until the reader catches up; with it the undeliverable packet goes the
  fail-open or fail-closed way (user_dropped) and the loop never sees an error.
- One blocking recvmmsg with MSG_WAITFORONE per burst: it waits for the first packet (at
  most SO_RCVTIMEO, so the loop wakes up to swap policy images, send counters and see
  signals) and takes what else is queued without waiting: one system call per burst, as the
  C reference loop of the benchmarks (a poll first cost a second call per burst).

Why raw netlink: libnetfilter_queue's libmnl API builds the one-off bind message and checks
its acknowledgement here, but its per-packet helpers would mean a callback per attribute on
receive and a copy of each replaced payload on send; the two per-packet formats are written
out below instead: one pass over the attributes, replaced payloads sent from the caller's
memory through their own iovecs.
"""

import errno as errno_codes
import os

from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport (EAGAIN, EBADF, EINTR, EINVAL, EMSGSIZE, ENOBUFS, EOPNOTSUPP, EPERM,
                         errno)
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec, timeval
from posix.unistd cimport close as close_fd

from edufilter.errors import QueueError

cdef extern from "<sys/socket.h>" nogil:
    enum:
        AF_NETLINK
        AF_UNSPEC
        SOCK_RAW
        SOCK_CLOEXEC
        SOCK_NONBLOCK
        SOL_SOCKET
        SOL_NETLINK
        SO_RCVBUF
        SO_RCVBUFFORCE
        SO_SNDBUF
        SO_SNDBUFFORCE
        MSG_DONTWAIT
        MSG_TRUNC
        MSG_WAITFORONE
        SO_RCVTIMEO
    ctypedef unsigned int socklen_t
    cdef struct sockaddr:
        pass
    int socket(int domain, int type, int protocol)
    int bind(int fd, const sockaddr* address, socklen_t length)
    int getsockname(int fd, sockaddr* address, socklen_t* length)
    int setsockopt(int fd, int level, int name, const void* value, socklen_t length)
    int getsockopt(int fd, int level, int name, void* value, socklen_t* length)
    ssize_t sendmsg(int fd, const msghdr* message, int flags)
    ssize_t recv(int fd, void* buffer, size_t length, int flags)
    int recvmmsg(int fd, mmsghdr* messages, unsigned int count, int flags, timespec* timeout)

cdef extern from "<arpa/inet.h>" nogil:
    uint32_t htonl(uint32_t value)

cdef extern from "<poll.h>" nogil:
    enum:
        POLLIN
    cdef struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd* fds, unsigned long count, int timeout_ms)

cdef extern from "<linux/netlink.h>" nogil:
    enum:
        NETLINK_NETFILTER
        NETLINK_NO_ENOBUFS
        NLMSG_ERROR
        NLM_F_REQUEST
        NLM_F_ACK
        NLA_TYPE_MASK
    cdef struct nlmsghdr:
        uint32_t nlmsg_len
        uint16_t nlmsg_type
        uint16_t nlmsg_flags
        uint32_t nlmsg_seq
        uint32_t nlmsg_pid

cdef extern from "<linux/netfilter/nfnetlink.h>" nogil:
    enum:
        NFNL_SUBSYS_QUEUE
        NFNETLINK_V0

cdef extern from "<linux/netfilter/nfnetlink_queue.h>" nogil:
    enum:
        NFQNL_MSG_PACKET
        NFQNL_MSG_VERDICT
        NFQNL_MSG_CONFIG
        NFQNL_MSG_VERDICT_BATCH
        NFQNL_CFG_CMD_BIND
        NFQNL_COPY_PACKET
        NFQA_PACKET_HDR
        NFQA_VERDICT_HDR
        NFQA_MARK
        NFQA_IFINDEX_INDEV
        NFQA_IFINDEX_OUTDEV
        NFQA_HWADDR
        NFQA_PAYLOAD
        NFQA_CAP_LEN
        NFQA_SKB_INFO
        NFQA_CFG_MASK
        NFQA_CFG_FLAGS
        NFQA_CFG_F_FAIL_OPEN
        NFQA_CFG_F_CONNTRACK
        NFQA_CFG_F_GSO

cdef extern from "<libmnl/libmnl.h>" nogil:
    void mnl_attr_put_u32(nlmsghdr* message, uint16_t attribute_type, uint32_t value)
    int mnl_cb_run(const void* buffer, size_t length, unsigned int seq, unsigned int portid,
                   void* callback, void* data)

cdef extern from "<libnetfilter_queue/libnetfilter_queue.h>" nogil:
    nlmsghdr* nfq_nlmsg_put(char* buffer, int message_type, uint32_t queue_num)
    void nfq_nlmsg_cfg_put_cmd(nlmsghdr* message, uint16_t family, uint8_t command)
    void nfq_nlmsg_cfg_put_params(nlmsghdr* message, uint8_t mode, int copy_range)
    void nfq_nlmsg_cfg_put_qmaxlen(nlmsghdr* message, uint32_t max_length)

cdef enum:
    NLMSG_HEADER_SIZE = 16
    NFGENMSG_SIZE = 4
    PACKET_MESSAGE_TYPE = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET
    MAX_COPY_RANGE = 0xFFFF
    MAX_REPLACED_PAYLOAD = 0xFFFF - 4          # an attribute's length is 16 bits
    MAX_BATCH = 1024                           # packets per receive (UIO_MAXIOV)
    # Room after the payload in a receive slot for the other attributes, conntrack ones included.
    SLOT_HEADROOM = 2048
    # A verdict message: nlmsghdr, nfgenmsg, verdict header, mark and payload attribute header.
    VERDICT_MESSAGE_ROOM = 48
    SEND_HEADER_CAPACITY = VERDICT_MESSAGE_ROOM * 1024
    SEND_IOVEC_CAPACITY = 1024
    # Bytes per sendmsg; the kernel refuses a message above its send buffer.
    SEND_BYTES_LIMIT = 256 * 1024
    BIND_ACK_TIMEOUT_MS = 2000
    SERVE_POLL_MS = 20

# serve() returns to Python this often, to run signal handlers.
cdef double SERVE_SLICE_SECONDS = 0.05

PROC_QUEUES = "/proc/net/netfilter/nfnetlink_queue"
PROC_NETLINK = "/proc/net/netlink"
ACCEPT = NF_ACCEPT
DROP = NF_DROP
REPEAT = NF_REPEAT
_VERDICTS = {NF_ACCEPT, NF_DROP, NF_REPEAT}

cdef uint8_t ZERO_PAD[4]


cdef inline uint16_t be16(const uint8_t* p) noexcept nogil:
    return (<uint16_t>p[0] << 8) | p[1]

cdef inline uint32_t be32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]

cdef inline void put_be32(uint8_t* p, uint32_t value) noexcept nogil:
    p[0] = value >> 24
    p[1] = value >> 16
    p[2] = value >> 8
    p[3] = value

# Netlink and attribute headers are in host order; attribute values in network order.
cdef inline uint16_t host16(const uint8_t* p) noexcept nogil:
    return (<const uint16_t*>p)[0]

cdef inline void put_host16(uint8_t* p, uint16_t value) noexcept nogil:
    (<uint16_t*>p)[0] = value

cdef inline void put_host32(uint8_t* p, uint32_t value) noexcept nogil:
    (<uint32_t*>p)[0] = value

cdef inline uint32_t align4(uint32_t length) noexcept nogil:
    return (length + 3) & ~(<uint32_t>3)

cdef inline double monotonic_now() noexcept nogil:
    cdef timespec now
    clock_gettime(CLOCK_MONOTONIC, &now)
    return now.tv_sec + now.tv_nsec * 1e-9


cdef ssize_t send_to_kernel(int fd, iovec* parts, size_t count) noexcept nogil:
    cdef msghdr header
    cdef sockaddr_nl kernel
    memset(&kernel, 0, sizeof(kernel))
    kernel.nl_family = AF_NETLINK
    memset(&header, 0, sizeof(header))
    header.msg_name = &kernel
    header.msg_namelen = sizeof(kernel)
    header.msg_iov = parts
    header.msg_iovlen = count
    return sendmsg(fd, &header, 0)


cdef ssize_t send_config(int fd, nlmsghdr* message) noexcept nogil:
    cdef iovec part
    part.iov_base = message
    part.iov_len = message.nlmsg_len
    return send_to_kernel(fd, &part, 1)


cdef bint parse_packet(const uint8_t* message, uint32_t length,
                       QueuedPacket* packet) noexcept nogil:
    """Fill packet from an NFQNL_MSG_PACKET message; False without a packet header."""
    cdef uint32_t offset = NLMSG_HEADER_SIZE + NFGENMSG_SIZE
    cdef uint32_t attribute_length, data_length
    cdef uint16_t attribute_type
    cdef const uint8_t* data
    cdef bint has_header = False, has_cap_len = False
    packet.family = message[NLMSG_HEADER_SIZE]
    packet.mark = 0
    packet.indev = 0
    packet.outdev = 0
    packet.skb_info = 0
    packet.hwaddr_len = 0
    packet.payload = NULL
    packet.payload_len = 0
    packet.cap_len = 0
    while offset + 4 <= length:
        attribute_length = host16(message + offset)
        attribute_type = host16(message + offset + 2) & NLA_TYPE_MASK
        if attribute_length < 4:
            break
        data = message + offset + 4
        data_length = attribute_length - 4
        if offset + attribute_length > length:
            # Only a receive slot too small for the message cuts it; keep what arrived.
            if attribute_type == NFQA_PAYLOAD:
                packet.payload = data
                packet.payload_len = length - offset - 4
                packet.cap_len = data_length
                has_cap_len = True
            break
        if attribute_type == NFQA_PACKET_HDR:
            if data_length >= 7:
                packet.packet_id = be32(data)
                packet.hw_protocol = be16(data + 4)
                packet.hook = data[6]
                has_header = True
        elif attribute_type == NFQA_MARK:
            if data_length >= 4:
                packet.mark = be32(data)
        elif attribute_type == NFQA_IFINDEX_INDEV:
            if data_length >= 4:
                packet.indev = be32(data)
        elif attribute_type == NFQA_IFINDEX_OUTDEV:
            if data_length >= 4:
                packet.outdev = be32(data)
        elif attribute_type == NFQA_HWADDR:
            if data_length >= 12:
                packet.hwaddr_len = min(be16(data), 8)
                memcpy(packet.hwaddr, data + 4, 8)
        elif attribute_type == NFQA_SKB_INFO:
            if data_length >= 4:
                packet.skb_info = be32(data)
        elif attribute_type == NFQA_CAP_LEN:
            if data_length >= 4:
                packet.cap_len = be32(data)
                has_cap_len = True
        elif attribute_type == NFQA_PAYLOAD:
            packet.payload = data
            packet.payload_len = data_length
        offset += align4(attribute_length)
    # The kernel sends NFQA_CAP_LEN only when it copied less than the whole packet.
    if not has_cap_len:
        packet.cap_len = packet.payload_len
    return has_header


cdef inline bint same_plain_verdict(const Verdict* first, const Verdict* other) noexcept nogil:
    return (other.payload == NULL or other.payload_len == 0) and other.verdict == first.verdict \
        and other.set_mark == first.set_mark and (not first.set_mark or other.mark == first.mark)


cdef bint ids_ascending(const Verdict* verdicts, int count) noexcept nogil:
    cdef int i
    for i in range(1, count):
        if <int32_t>(verdicts[i].packet_id - verdicts[i - 1].packet_id) <= 0:
            return False
    return True


def _errno_text(int code) -> str:
    return f"{errno_codes.errorcode.get(code, str(code))} ({os.strerror(code)})"


cdef class Packet:
    """A copy of one queued packet, for tests and slow paths (the hot loop reads QueuedPacket)."""

    cdef readonly uint32_t packet_id
    cdef readonly int hook
    cdef readonly int family
    cdef readonly int hw_protocol
    cdef readonly uint32_t mark
    cdef readonly uint32_t indev
    cdef readonly uint32_t outdev
    cdef readonly bytes hwaddr
    cdef readonly uint32_t skb_info
    cdef readonly bytes payload
    cdef readonly uint32_t cap_len

    @property
    def truncated(self) -> bool:
        return self.cap_len > len(self.payload)

    @property
    def checksum_not_ready(self) -> bool:
        return bool(self.skb_info & SKB_CSUM_NOT_READY)

    @property
    def gso(self) -> bool:
        return bool(self.skb_info & SKB_GSO)

    def __repr__(self) -> str:
        return (f"Packet(id={self.packet_id}, hook={self.hook}, mark={self.mark:#x}, "
                f"indev={self.indev}, outdev={self.outdev}, "
                f"length={len(self.payload)}/{self.cap_len})")


cdef Packet copy_packet(const QueuedPacket* queued):
    cdef Packet packet = Packet.__new__(Packet)
    packet.packet_id = queued.packet_id
    packet.hook = queued.hook
    packet.family = queued.family
    packet.hw_protocol = queued.hw_protocol
    packet.mark = queued.mark
    packet.indev = queued.indev
    packet.outdev = queued.outdev
    packet.hwaddr = (<const char*>queued.hwaddr)[:queued.hwaddr_len]
    packet.skb_info = queued.skb_info
    packet.payload = b""
    if queued.payload_len:
        packet.payload = (<const char*>queued.payload)[:queued.payload_len]
    packet.cap_len = queued.cap_len
    return packet


cdef class PacketQueue:
    """One bound NFQUEUE queue; a context manager. The hot loop uses receive/send_verdicts,
    from one thread: the receive slots and the verdict buffer are not shared."""

    def __cinit__(self):
        self.fd = -1
        self.pending_ids = set()

    def __init__(
        self,
        queue_num: int,
        *,
        copy_range: int = MAX_COPY_RANGE,
        max_length: int = 8192,
        fail_open: bool = False,
        conntrack: bool = False,
        receive_buffer: int | None = None,
        batch_size: int = 64,
        batch_verdicts: bool = True,
    ) -> None:
        if not 0 <= queue_num <= 0xFFFF:
            raise QueueError(f"queue number {queue_num} is outside 0-65535")
        if not 1 <= copy_range <= MAX_COPY_RANGE:
            raise QueueError(f"copy range {copy_range} is outside 1-{MAX_COPY_RANGE}")
        if not 1 <= max_length <= 0xFFFFFFFF:
            raise QueueError(f"queue max length {max_length} must be positive")
        if not 1 <= batch_size <= MAX_BATCH:
            raise QueueError(f"batch size {batch_size} is outside 1-{MAX_BATCH}")
        if receive_buffer is None:
            receive_buffer = min(max_length * 2048, 1 << 30)
        if not 4096 <= receive_buffer <= 1 << 30:
            raise QueueError(f"receive buffer {receive_buffer} bytes is outside 4 KiB-1 GiB")
        self.queue_num = queue_num
        self.copy_range = copy_range
        self.max_length = max_length
        self.fail_open = fail_open
        self.batch_verdicts = batch_verdicts
        self._allocate(batch_size)
        self._open_socket(receive_buffer)
        try:
            self._bind(conntrack)
        except BaseException:
            self.close()
            raise

    def _allocate(self, int batch_size) -> None:
        cdef int i
        self.slot_count = batch_size
        self.slot_size = align4(self.copy_range + SLOT_HEADROOM)
        self.slot_memory = <uint8_t*>calloc(batch_size, self.slot_size)
        self.messages = <mmsghdr*>calloc(batch_size, sizeof(mmsghdr))
        self.slot_iovecs = <iovec*>calloc(batch_size, sizeof(iovec))
        self.sources = <sockaddr_nl*>calloc(batch_size, sizeof(sockaddr_nl))
        self.python_slots = <QueuedPacket*>calloc(batch_size, sizeof(QueuedPacket))
        self.send_headers = <uint8_t*>calloc(SEND_HEADER_CAPACITY, 1)
        self.send_iovecs = <iovec*>calloc(SEND_IOVEC_CAPACITY, sizeof(iovec))
        if (self.slot_memory == NULL or self.messages == NULL or self.slot_iovecs == NULL
                or self.sources == NULL or self.python_slots == NULL
                or self.send_headers == NULL or self.send_iovecs == NULL):
            raise MemoryError()
        for i in range(batch_size):
            self.slot_iovecs[i].iov_base = self.slot_memory + <size_t>i * self.slot_size
            self.slot_iovecs[i].iov_len = self.slot_size
            self.messages[i].msg_hdr.msg_iov = &self.slot_iovecs[i]
            self.messages[i].msg_hdr.msg_iovlen = 1
            self.messages[i].msg_hdr.msg_name = &self.sources[i]
            self.messages[i].msg_hdr.msg_namelen = sizeof(sockaddr_nl)

    def _open_socket(self, int receive_buffer) -> None:
        cdef sockaddr_nl address
        cdef socklen_t length = sizeof(address)
        cdef int enabled = 1, granted = 0, send_buffer = 2 * SEND_BYTES_LIMIT
        # Blocking, so that one recvmmsg both waits for a burst and takes it (SO_RCVTIMEO
        # bounds the wait); every other receive passes MSG_DONTWAIT.
        self.fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER)
        if self.fd < 0:
            code = errno
            raise QueueError(f"queue {self.queue_num}: no netfilter netlink socket: "
                             f"{_errno_text(code)}; is nfnetlink in this kernel?")
        memset(&address, 0, sizeof(address))
        address.nl_family = AF_NETLINK
        if bind(self.fd, <sockaddr*>&address, sizeof(address)) < 0 or \
                getsockname(self.fd, <sockaddr*>&address, &length) < 0:
            code = errno
            self.close()
            raise QueueError(f"queue {self.queue_num}: netlink bind failed: {_errno_text(code)}")
        self.portid = address.nl_pid
        if setsockopt(self.fd, SOL_SOCKET, SO_RCVBUFFORCE, &receive_buffer, sizeof(int)) < 0:
            setsockopt(self.fd, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof(int))
        length = sizeof(int)
        getsockopt(self.fd, SOL_SOCKET, SO_RCVBUF, &granted, &length)
        self.receive_buffer_bytes = granted
        if setsockopt(self.fd, SOL_SOCKET, SO_SNDBUFFORCE, &send_buffer, sizeof(int)) < 0:
            setsockopt(self.fd, SOL_SOCKET, SO_SNDBUF, &send_buffer, sizeof(int))
        length = sizeof(int)
        getsockopt(self.fd, SOL_SOCKET, SO_SNDBUF, &granted, &length)
        self.send_limit = min(<size_t>SEND_BYTES_LIMIT, <size_t>granted - 64)
        if setsockopt(self.fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, &enabled, sizeof(int)) < 0:
            code = errno
            self.close()
            raise QueueError(f"queue {self.queue_num}: NETLINK_NO_ENOBUFS: {_errno_text(code)}")

    def _bind(self, bint conntrack) -> None:
        """Bind the queue (acknowledged), then switch on packet copies (not acknowledged).

        The queue copies nothing until the second message, so no packet can arrive ahead of
        the acknowledgement and be consumed here (one that hits the queue in between is
        dropped by the kernel); a failure of the second message would show in kernel_errors.
        """
        cdef char buffer[256]
        cdef nlmsghdr* message
        cdef uint32_t flags = NFQA_CFG_F_GSO, seq = 1
        cdef ssize_t received
        cdef pollfd waiting
        if self.fail_open:
            flags |= NFQA_CFG_F_FAIL_OPEN
        if conntrack:
            flags |= NFQA_CFG_F_CONNTRACK
        message = nfq_nlmsg_put(buffer, NFQNL_MSG_CONFIG, self.queue_num)
        nfq_nlmsg_cfg_put_cmd(message, AF_UNSPEC, NFQNL_CFG_CMD_BIND)
        nfq_nlmsg_cfg_put_qmaxlen(message, self.max_length)
        mnl_attr_put_u32(message, NFQA_CFG_FLAGS, htonl(flags))
        mnl_attr_put_u32(message, NFQA_CFG_MASK,
                         htonl(NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_CONNTRACK | NFQA_CFG_F_GSO))
        message.nlmsg_flags |= NLM_F_ACK
        message.nlmsg_seq = seq
        if send_config(self.fd, message) < 0:
            raise QueueError(self._bind_failure(errno))
        waiting.fd = self.fd
        waiting.events = POLLIN
        if poll(&waiting, 1, BIND_ACK_TIMEOUT_MS) <= 0:
            raise QueueError(f"queue {self.queue_num}: the kernel did not answer the bind")
        received = recv(self.fd, buffer, sizeof(buffer), MSG_DONTWAIT)
        if received < 0 or mnl_cb_run(buffer, received, seq, self.portid, NULL, NULL) < 0:
            raise QueueError(self._bind_failure(errno))
        message = nfq_nlmsg_put(buffer, NFQNL_MSG_CONFIG, self.queue_num)
        nfq_nlmsg_cfg_put_params(message, NFQNL_COPY_PACKET, self.copy_range)
        if send_config(self.fd, message) < 0:
            raise QueueError(self._bind_failure(errno))

    def _bind_failure(self, int code) -> str:
        prefix = f"cannot bind queue {self.queue_num}: {_errno_text(code)}"
        if code == EPERM:
            try:
                owner = parse_queue_counters(_read_text(PROC_QUEUES), self.queue_num)
            except OSError:
                owner = None
            if owner is not None:
                return f"{prefix}: netlink port {owner['peer_portid']} has already bound it"
            return f"{prefix}: binding a queue needs CAP_NET_ADMIN in this network namespace"
        if code in (EINVAL, EOPNOTSUPP):
            return f"{prefix}: is nfnetlink_queue loaded (modprobe nfnetlink_queue)?"
        return prefix

    # ------------------------------------------------------------ the hot path

    cdef int set_receive_timeout(self, int timeout_ms) noexcept nogil:
        """SO_RCVTIMEO for the blocking receive; a negative timeout waits without end."""
        cdef timeval wait
        wait.tv_sec = timeout_ms // 1000 if timeout_ms > 0 else 0
        wait.tv_usec = (timeout_ms % 1000) * 1000 if timeout_ms > 0 else 0
        if setsockopt(self.fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof(timeval)) < 0:
            return -1
        self.receive_timeout_ms = timeout_ms
        return 0

    cdef int receive(self, QueuedPacket* out, int max_packets, int timeout_ms) noexcept nogil:
        """Receive up to max_packets into out; 0 on timeout, a negative errno on error.

        A negative timeout waits without end. Payloads stay valid until the next receive.
        """
        cdef int received, i, count = 0
        cdef const uint8_t* data
        cdef uint32_t length, message_length
        cdef int32_t error
        if self.fd < 0:
            return -EBADF
        if max_packets > self.slot_count:
            max_packets = self.slot_count
        if max_packets <= 0:
            return -EINVAL
        # One system call per burst: wait for its first packet (at most timeout_ms), then
        # take what else is there without waiting.
        if timeout_ms == 0:
            received = recvmmsg(self.fd, self.messages, max_packets, MSG_DONTWAIT, NULL)
        else:
            if timeout_ms != self.receive_timeout_ms and self.set_receive_timeout(timeout_ms) < 0:
                return -errno
            received = recvmmsg(self.fd, self.messages, max_packets, MSG_WAITFORONE, NULL)
        if received < 0:
            if errno == EAGAIN:
                return 0
            if errno == ENOBUFS:
                self.counters.enobufs += 1
                return 0
            return -errno
        # The kernel sends each packet and each error reply as its own datagram.
        for i in range(received):
            self.messages[i].msg_hdr.msg_namelen = sizeof(sockaddr_nl)
            length = self.messages[i].msg_len
            data = <const uint8_t*>self.slot_iovecs[i].iov_base
            if self.messages[i].msg_hdr.msg_flags & MSG_TRUNC:
                self.counters.truncated_messages += 1
            if self.sources[i].nl_pid != 0 or length < NLMSG_HEADER_SIZE + NFGENMSG_SIZE:
                self.counters.malformed_messages += 1
                continue
            message_length = (<const nlmsghdr*>data).nlmsg_len
            if message_length < length:
                length = message_length
            if (<const nlmsghdr*>data).nlmsg_type == PACKET_MESSAGE_TYPE:
                if parse_packet(data, length, &out[count]):
                    if out[count].skb_info & SKB_GSO:
                        self.counters.gso_packets += 1
                    if out[count].skb_info & SKB_CSUM_NOT_READY:
                        self.counters.checksum_not_ready += 1
                    count += 1
                else:
                    self.counters.malformed_messages += 1
            elif (<const nlmsghdr*>data).nlmsg_type == NLMSG_ERROR:
                error = (<const int32_t*>(data + NLMSG_HEADER_SIZE))[0]
                if error != 0:
                    self.counters.kernel_errors += 1
                    self.counters.last_kernel_error = -error
        if count:
            self.counters.receive_calls += 1
            self.counters.packets += count
            self.held += count
        return count

    cdef int send_verdicts(self, const Verdict* verdicts, int count) noexcept nogil:
        """Send count verdicts in one sendmsg; count, or a negative errno.

        Runs of equal verdicts without a payload become one NFQNL_MSG_VERDICT_BATCH when the
        ids ascend and they are every packet still held: the kernel applies a batch verdict
        to every queued id up to its own. Each received packet must get exactly one verdict.
        """
        cdef int i = 0, last, status = 0
        cdef bint use_batches
        if self.fd < 0:
            return -EBADF
        if count <= 0:
            return 0
        for i in range(count):
            if verdicts[i].payload != NULL and verdicts[i].payload_len > MAX_REPLACED_PAYLOAD:
                return -EMSGSIZE
        use_batches = self.batch_verdicts and self.held == <uint64_t>count \
            and ids_ascending(verdicts, count)
        i = 0
        while i < count and status == 0:
            last = i
            if use_batches and (verdicts[i].payload == NULL or verdicts[i].payload_len == 0):
                while last + 1 < count and same_plain_verdict(&verdicts[i], &verdicts[last + 1]):
                    last += 1
            if last > i:
                status = self.append_verdict(NFQNL_MSG_VERDICT_BATCH, &verdicts[last])
                self.counters.batch_messages += 1
            else:
                status = self.append_verdict(NFQNL_MSG_VERDICT, &verdicts[i])
                self.counters.verdict_messages += 1
            i = last + 1
        if status == 0:
            status = self.flush_verdicts()
        self.held = self.held - count if self.held > <uint64_t>count else 0
        self.counters.verdicts += count
        return count if status == 0 else status

    cdef int append_verdict(self, uint16_t message_type, const Verdict* verdict) noexcept nogil:
        cdef bint replaces = verdict.payload != NULL and verdict.payload_len > 0
        cdef uint32_t header_length = NLMSG_HEADER_SIZE + NFGENMSG_SIZE + 12
        cdef uint32_t payload_length = verdict.payload_len if replaces else 0
        cdef uint32_t pad = align4(payload_length) - payload_length
        cdef uint8_t* p
        cdef int status
        if verdict.set_mark:
            header_length += 8
        if replaces:
            header_length += 4
        if (self.send_header_used + VERDICT_MESSAGE_ROOM > SEND_HEADER_CAPACITY
                or self.send_iovec_count + 3 > SEND_IOVEC_CAPACITY
                or self.send_bytes + header_length + payload_length + pad > self.send_limit):
            status = self.flush_verdicts()
            if status < 0:
                return status
        p = self.send_headers + self.send_header_used
        # nlmsg_len leaves out the padding after a payload, which still separates messages.
        put_host32(p, header_length + payload_length)
        put_host16(p + 4, (NFNL_SUBSYS_QUEUE << 8) | message_type)
        put_host16(p + 6, NLM_F_REQUEST)
        put_host32(p + 8, 0)
        put_host32(p + 12, 0)
        p[16] = AF_UNSPEC
        p[17] = NFNETLINK_V0
        p[18] = <uint8_t>(self.queue_num >> 8)
        p[19] = <uint8_t>self.queue_num
        put_host16(p + 20, 12)
        put_host16(p + 22, NFQA_VERDICT_HDR)
        put_be32(p + 24, verdict.verdict)
        put_be32(p + 28, verdict.packet_id)
        p += 32
        if verdict.set_mark:
            put_host16(p, 8)
            put_host16(p + 2, NFQA_MARK)
            put_be32(p + 4, verdict.mark)
            p += 8
        if replaces:
            put_host16(p, <uint16_t>(4 + payload_length))
            put_host16(p + 2, NFQA_PAYLOAD)
        self.add_send_part(self.send_headers + self.send_header_used, header_length)
        self.send_header_used += header_length
        if replaces:
            self.add_send_part(verdict.payload, payload_length)
            if pad:
                self.add_send_part(ZERO_PAD, pad)
        self.send_bytes += header_length + payload_length + pad
        return 0

    cdef void add_send_part(self, const void* base, size_t length) noexcept nogil:
        cdef iovec* previous
        if self.send_iovec_count > 0:
            previous = &self.send_iovecs[self.send_iovec_count - 1]
            if <const uint8_t*>previous.iov_base + previous.iov_len == <const uint8_t*>base:
                previous.iov_len += length
                return
        self.send_iovecs[self.send_iovec_count].iov_base = <void*>base
        self.send_iovecs[self.send_iovec_count].iov_len = length
        self.send_iovec_count += 1

    cdef int flush_verdicts(self) noexcept nogil:
        cdef ssize_t sent
        if self.send_iovec_count == 0:
            return 0
        sent = send_to_kernel(self.fd, self.send_iovecs, self.send_iovec_count)
        self.counters.send_calls += 1
        self.send_iovec_count = 0
        self.send_header_used = 0
        self.send_bytes = 0
        if sent < 0:
            self.counters.send_errors += 1
            return -errno
        return 0

    cdef int serve_fixed(self, Verdict* verdicts, uint32_t verdict, bint set_mark, uint32_t mark,
                         double until, uint64_t* served) noexcept nogil:
        """Give every packet the same verdict until the monotonic time `until`; 0 or -errno."""
        cdef int count, i, status
        while monotonic_now() < until:
            count = self.receive(self.python_slots, self.slot_count, SERVE_POLL_MS)
            if count < 0:
                return count
            for i in range(count):
                verdicts[i].packet_id = self.python_slots[i].packet_id
                verdicts[i].verdict = verdict
                verdicts[i].set_mark = set_mark
                verdicts[i].mark = mark
                verdicts[i].payload = NULL
                verdicts[i].payload_len = 0
                # A repeated packet that comes back with the mark would otherwise loop.
                if verdict == NF_REPEAT and set_mark and self.python_slots[i].mark == mark:
                    verdicts[i].verdict = NF_ACCEPT
            status = self.send_verdicts(verdicts, count)
            if status < 0:
                return status
            served[0] += count
        return 0

    # ------------------------------------------------------------ the Python surface

    def _require_open(self) -> None:
        if self.fd < 0:
            raise QueueError(f"queue {self.queue_num} is closed")

    def fileno(self) -> int:
        self._require_open()
        return self.fd

    def receive_batch(self, int max_packets=64, timeout: float | None = 0.1) -> list:
        """Copies of up to max_packets queued packets; [] when none came within timeout seconds."""
        cdef int count, i
        cdef int timeout_ms = -1 if timeout is None else max(0, int(timeout * 1000))
        self._require_open()
        if max_packets < 1:
            raise ValueError(f"max_packets must be positive, not {max_packets}")
        with nogil:
            count = self.receive(self.python_slots, max_packets, timeout_ms)
        if count == -EINTR:
            PyErr_CheckSignals()
            return []
        if count < 0:
            raise QueueError(f"queue {self.queue_num}: receive failed: {_errno_text(-count)}")
        packets = [copy_packet(&self.python_slots[i]) for i in range(count)]
        self.pending_ids.update(packet.packet_id for packet in packets)
        return packets

    def verdict(self, packet_id: int, verdict: int, mark: int | None = None,
                payload: bytes | None = None) -> None:
        """Give one packet from receive_batch its verdict (and a new mark or payload)."""
        self.verdict_batch([(packet_id, verdict, mark, payload)])

    def verdict_batch(self, verdicts: list) -> None:
        """Send (packet_id, verdict[, mark[, payload]]) tuples in one sendmsg."""
        cdef Verdict* batch
        cdef int count = len(verdicts), i, status
        self._require_open()
        items = [_checked_verdict(item) for item in verdicts]
        ids = [item[0] for item in items]
        unknown = [packet_id for packet_id in ids if packet_id not in self.pending_ids]
        if unknown or len(set(ids)) != len(ids):
            raise ValueError(f"queue {self.queue_num}: no verdict is owed for packet ids "
                             f"{unknown or ids} (unknown, or a second verdict)")
        if count == 0:
            return
        batch = <Verdict*>calloc(count, sizeof(Verdict))
        if batch == NULL:
            raise MemoryError()
        try:
            for i, (packet_id, verdict, mark, payload) in enumerate(items):
                batch[i].packet_id = packet_id
                batch[i].verdict = verdict
                batch[i].set_mark = mark is not None
                batch[i].mark = mark or 0
                if payload is not None:
                    batch[i].payload = <const uint8_t*><const char*>payload
                    batch[i].payload_len = len(payload)
            with nogil:
                status = self.send_verdicts(batch, count)
        finally:
            free(batch)
        self.pending_ids.difference_update(ids)
        if status < 0:
            raise QueueError(f"queue {self.queue_num}: verdicts failed: {_errno_text(-status)}")

    def serve(self, int verdict=NF_ACCEPT, mark: int | None = None,
              seconds: float | None = None) -> int:
        """Give every packet the same verdict (and mark) for `seconds`, or until a signal
        handler raises; returns the packets served. Under REPEAT a packet that already
        carries the mark is accepted instead."""
        cdef Verdict* verdicts
        cdef uint64_t served = 0
        cdef int status
        cdef double until, deadline = 0.0 if seconds is None else monotonic_now() + seconds
        cdef bint set_mark = mark is not None
        cdef uint32_t mark_value = mark or 0
        self._require_open()
        _checked_verdict((0, verdict, mark, None))
        verdicts = <Verdict*>calloc(self.slot_count, sizeof(Verdict))
        if verdicts == NULL:
            raise MemoryError()
        try:
            while deadline == 0.0 or monotonic_now() < deadline:
                until = monotonic_now() + SERVE_SLICE_SECONDS
                if deadline != 0.0 and until > deadline:
                    until = deadline
                with nogil:
                    status = self.serve_fixed(verdicts, verdict, set_mark, mark_value, until,
                                              &served)
                if status < 0 and status != -EINTR:
                    raise QueueError(f"queue {self.queue_num}: {_errno_text(-status)}")
                # Signal handlers run here: under load the nogil loop never sees EINTR.
                PyErr_CheckSignals()
            return served
        finally:
            free(verdicts)

    @property
    def stats(self) -> dict:
        """This socket's counters (see queue_counters for the kernel's)."""
        counters = dict(self.counters)
        counters["held"] = self.held
        return counters

    def close(self) -> None:
        """Close the socket: the kernel unbinds the queue and drops what it still holds."""
        if self.fd >= 0:
            close_fd(self.fd)
            self.fd = -1

    def __enter__(self) -> PacketQueue:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __dealloc__(self):
        if self.fd >= 0:
            close_fd(self.fd)
        free(self.slot_memory)
        free(self.messages)
        free(self.slot_iovecs)
        free(self.sources)
        free(self.python_slots)
        free(self.send_headers)
        free(self.send_iovecs)


def _checked_verdict(item: tuple) -> tuple:
    packet_id, verdict, mark, payload = (tuple(item) + (None, None))[:4]
    if verdict not in _VERDICTS:
        raise ValueError(f"verdict {verdict!r} is not ACCEPT (1), DROP (0) or REPEAT (4)")
    if not 0 <= packet_id <= 0xFFFFFFFF:
        raise ValueError(f"packet id {packet_id} is outside 32 bits")
    if mark is not None and not 0 <= mark <= 0xFFFFFFFF:
        raise ValueError(f"mark {mark:#x} is outside 32 bits")
    if payload is not None:
        if not isinstance(payload, bytes):
            raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
        if not 1 <= len(payload) <= MAX_REPLACED_PAYLOAD:
            raise ValueError(f"payload of {len(payload)} bytes is outside 1-{MAX_REPLACED_PAYLOAD}")
    return packet_id, verdict, mark, payload


def _read_text(path: str) -> str:
    with open(path, encoding="ascii") as file:
        return file.read()


QUEUE_FIELDS = ("queue_num", "peer_portid", "queue_total", "copy_mode", "copy_range",
                "queue_dropped", "user_dropped", "id_sequence")


def parse_queue_counters(text: str, queue_num: int) -> dict | None:
    """The line of queue_num in /proc/net/netfilter/nfnetlink_queue text; None if absent."""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= len(QUEUE_FIELDS) and fields[0].isdigit() and int(fields[0]) == queue_num:
            return {name: int(value) for name, value in zip(QUEUE_FIELDS, fields)}
    return None


def parse_netlink_sockets(text: str, protocol: int = NETLINK_NETFILTER) -> dict:
    """Netlink sockets of one protocol from /proc/net/netlink text, by port id."""
    lines = text.splitlines()
    if not lines:
        return {}
    header = lines[0].split()
    sockets = {}
    for line in lines[1:]:
        row = dict(zip(header, line.split()))
        try:
            if int(row["Eth"]) == protocol:
                sockets[int(row["Pid"])] = {"rmem": int(row["Rmem"]), "drops": int(row["Drops"])}
        except (KeyError, ValueError):
            continue
    return sockets


def queue_counters(queue_num: int) -> dict:
    """The kernel's counters for a bound queue in this network namespace, with its socket's
    receive memory and overrun drops."""
    try:
        counters = parse_queue_counters(_read_text(PROC_QUEUES), queue_num)
    except OSError as error:
        raise QueueError(f"cannot read {PROC_QUEUES}: {error}") from error
    if counters is None:
        raise QueueError(f"queue {queue_num} is not bound in this network namespace")
    try:
        socket = parse_netlink_sockets(_read_text(PROC_NETLINK)).get(counters["peer_portid"])
    except OSError:
        socket = None
    if socket is not None:
        counters["socket_receive_memory"] = socket["rmem"]
        counters["socket_drops"] = socket["drops"]
    return counters
