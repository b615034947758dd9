# The C declarations of the libraries the capture stage talks to: sockets (recvmmsg, sendmsg),
# netlink and nfnetlink_queue's message and attribute numbers, libmnl and libnetfilter_queue
# (only their helpers that build the one-off bind message).

from libc.stdint cimport uint8_t, uint16_t, uint32_t
from posix.time cimport timespec
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
    cdef struct sockaddr_nl:
        unsigned short nl_family
        unsigned short nl_pad
        uint32_t nl_pid
        uint32_t nl_groups
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

