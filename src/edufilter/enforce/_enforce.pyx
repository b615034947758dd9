# cython: language_level=3
"""The data path's loop: receive a batch from NFQUEUE, decode and classify every packet
without the GIL, and give all the verdicts in one send.

A decision is an NF_REPEAT verdict whose packet mark carries the flow's verdict code: the
rules save it into the conntrack mark and the kernel handles the rest of the flow. A
packet that does not decide its flow yet (a SYN, the first segment of a split ClientHello,
a DNS query) is passed: an NF_REPEAT with the pass code, on which the rules return at once
(their table's base chain is their own, so the school's chains still follow). Rare work —
a DNS answer to write, a block page to inject, an event to log —
is flagged and done in Python by the worker's handler between the classify pass and the send.

Every decided flow is remembered in a bounded table (key, group, code, name), so packets
already queued when the decision was made get the same verdict, and a new policy can
re-decide the flows it changes.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcmp, memcpy, memset

from edufilter.classify._classify cimport (
    ACTION_ALLOW,
    ACTION_BLOCK,
    ACTION_DROP,
    ACTION_MONITOR,
    ACTION_SINKHOLE,
    CLIENT_BY_DEFAULT,
    NAME_CACHE_NAMES,
    NO_RULE,
    Classifier,
    Decision,
    NameCache,
    name_cache_clear,
    name_cache_free,
    name_cache_init,
    name_cache_prefetch,
)
from edufilter._fastpath cimport (
    DECODE_FRAGMENT,
    DECODE_OK,
    DECODE_OTHER,
    EVASION_NONE,
    HANDSHAKE_PENDING,
    HANDSHAKE_UNFINISHED,
    KIND_DNS,
    KIND_HTTP_HOST,
    KIND_NONE,
    KIND_QUIC_INITIAL,
    KIND_SNI,
    BODY_TUNNEL,
    BODY_UNREADABLE,
    FlowExtractor,
    NameResult,
    Packet,
)
from edufilter.decode._http cimport (
    FOLLOW_END,
    FOLLOW_GAP,
    FOLLOW_UNKNOWN,
    FOLLOW_UNREADABLE,
    FollowStatus,
    HttpFollower,
)
from edufilter.decode._quic cimport QUIC_NAME, QUIC_PENDING, QuicFlows, QuicStatus
from edufilter.capture._queue cimport (
    NF_DROP,
    NF_REPEAT,
    SKB_CSUM_NOT_READY,
    SKB_GSO,
    PacketQueue,
    QueuedPacket,
    Verdict,
)

cdef extern from *:
    """
    #include <stdlib.h>
    #define EF_PREFETCH_WRITE(p) __builtin_prefetch((const void*)(p), 1)
    """
    void EF_PREFETCH_WRITE(const void* p) nogil

cdef extern from "_lines.h":
    void* ef_calloc_lines(size_t count, size_t size) nogil

cdef extern from "_hash.h":
    uint64_t ef_hash_bytes(const void* data, size_t n) nogil
    uint64_t ef_hash_flow(uint64_t fields, const uint8_t* src, const uint8_t* dst) nogil

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    cdef struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clock, timespec* ts)
    enum:
        CLOCK_REALTIME

# Verdict codes in the packet and conntrack marks (rules/marks.py).
cpdef enum Code:
    CODE_UNDECIDED = 0
    CODE_ALLOW = 1
    CODE_REJECT = 2
    CODE_DROP = 3
    CODE_PASS = 4
    CODE_BOUND = 5
    CODE_SAFE_SEARCH = 6
    CODE_INJECTED = 7
    CODE_HTTP_FOLLOW = 8    # allowed plain HTTP: the client's data is still queued, each request judged

# Why a packet needs the worker's Python handler.
cpdef enum Slow:
    SLOW_NONE = 0
    SLOW_EVENT = 1          # a block or monitor decision: log it
    SLOW_DNS_ANSWER = 2     # a blocked DNS query: answer it (NXDOMAIN or the block page) and drop it
    SLOW_DNS_SPECIAL = 3    # safe search, a bypass signal or an HTTPS record: rewrite or answer
    SLOW_DNS_REPLY = 4      # the resolver's answer to a safe-search query: restore the question
    SLOW_HTTP_BLOCK = 6     # a blocked plain-HTTP request: inject the block page
    SLOW_HTTP_URL = 7       # a plain-HTTP host with URL-prefix rules: the path decides
    SLOW_SAFE_SEARCH = 8    # TLS to a name safe search rewrites: only the provider's safe address

# Why a flow was decided as it was, beyond the classifier's rule.
cpdef enum Reason:
    REASON_RULE = 0         # a rule matched (or the group's default, list_id -1)
    REASON_BOUND = 1        # no name within the inspection bound: the group's default
    REASON_DOT = 3          # DNS over TLS/QUIC (port 853) under the bypass shield
    REASON_QUIC = 4         # QUIC blocked for the group (browsers fall back to TCP)
    REASON_DNS_TCP = 5      # a query safe search or the shield would answer, over TCP: reset
    REASON_EVASION = 6      # a circumvention attempt: split past the bound, decoy, overlap, urgent data, no name
    REASON_SAFE_SEARCH = 7  # a safe-search name at an address the rewrite did not give: reset

# What a group's flows without a readable name get (policy.model.UnnamedFlows).
cpdef enum Unnamed:
    UNNAMED_ALLOW = 0       # the destination address and the group's default decide
    UNNAMED_BLOCK_WEB = 1   # TCP 80/443: reset, reason evasion
    UNNAMED_BLOCK_ALL = 2   # and every other port but DNS, NTP and UDP/443 (QUIC's): blocked

cdef enum:
    TCP_SYN = 0x02
    MAX_BATCH = 256
    DECIDED_PROBES = 8      # a bucket: eight slots, their tags in one cache line
    DECIDED_NAME = 256
    NO_SLOT = 0x7FFFFFFF
    PROTO_TCP = 6
    PROTO_UDP = 17
    DNS_PORT = 53
    DNS_TYPE_SVCB = 64
    DNS_TYPE_HTTPS = 65
    DOT_PORT = 853
    QUIC_PORT = 443
    HTTP_PORT = 80
    HTTPS_PORT = 443
    NTP_PORT = 123
    CODE_FIELD_MIN = 15     # the largest code the mark field must hold (CODE_HTTP_FOLLOW needs 4 bits)
    # How strict one judged request is, so the strictest of a packet's requests decides.
    RANK_NONE = -1
    RANK_ALLOW = 0
    RANK_MONITOR = 1
    RANK_URL = 2            # its host has URL-prefix rules: the slow path decides
    RANK_BLOCK = 3
    FOLLOW_GAP_RANK = 4     # not a rank: the segment is past a hole in the stream

cdef struct FlowId:
    uint8_t ip_version
    uint8_t protocol
    uint16_t sport
    uint16_t dport
    uint8_t src[16]
    uint8_t dst[16]

# A remembered decision: one cache line. The flow's name, when it has one, is kept apart
# (names[slot]), so flows without a name never touch it.
cdef struct DecidedFlow:
    uint64_t hash
    FlowId flow
    double decided_at
    uint16_t group
    uint8_t code
    uint8_t kind
    uint8_t name_len

# An open-addressed set of name hashes, at most half full (a false hit only sends a packet
# to Python, where the name is looked at again).
cdef struct NameSet:
    uint64_t* slots
    uint32_t mask

cdef struct GroupSettings:
    uint8_t default_action
    uint8_t safe_search
    uint8_t quic_block
    uint8_t bypass_shield
    uint8_t unnamed         # Unnamed

# What the classify pass found out about one packet, for the handler and the counters.
cdef struct Work:
    uint8_t slow
    uint8_t kind
    uint8_t action           # the final RuleAction, the group's default applied
    uint8_t code
    uint8_t reason
    uint8_t ech
    uint8_t decided          # this packet decided its flow (counted once)
    uint8_t counted          # a DNS query judged: counted like a decision, no flow marked
    int32_t group
    int32_t list_id
    int32_t tier
    uint32_t order
    uint16_t dns_qtype
    FlowId flow
    uint64_t flow_hash       # of flow: the decided-flow table's key, hashed once per packet
    int name_len
    char name[256]
    int path_len
    char path[256]

cdef struct Counters:
    uint64_t packets
    uint64_t batches
    uint64_t undecided          # accepted unmarked: the flow's name is still to come
    uint64_t flows_decided
    uint64_t repeated           # packets of an already decided flow (queued before the mark)
    uint64_t dns_queries
    uint64_t dns_blocked
    uint64_t slow_packets
    uint64_t malformed_dropped
    uint64_t fragments_accepted
    uint64_t receive_errors
    uint64_t send_errors
    uint64_t decided_evicted
    uint64_t decided_forgotten  # a SYN reused a remembered flow's 5-tuple: a new connection
    uint64_t evasion            # flows stopped as circumvention attempts (REASON_EVASION)
    uint64_t held_past_bound    # packets past the kernel's bound queued on: a name still under way
    uint64_t by_code[16]


cdef inline double wall_clock() noexcept nogil:
    cdef timespec now
    clock_gettime(CLOCK_REALTIME, &now)
    return now.tv_sec + now.tv_nsec * 1e-9


cdef inline uint8_t code_for(uint8_t action) noexcept nogil:
    if action == ACTION_BLOCK or action == ACTION_SINKHOLE:
        return CODE_REJECT
    if action == ACTION_DROP:
        return CODE_DROP
    return CODE_ALLOW


cdef class Enforcer:
    """One worker's loop over one PacketQueue; classifier and group settings are swapped
    in whole by set_policy, between batches."""

    cdef PacketQueue queue
    cdef FlowExtractor extractor
    cdef QuicFlows quic                # QUIC connections whose ClientHello is being read
    cdef Classifier classifier
    cdef GroupSettings* groups
    cdef int group_count
    cdef int list_count
    cdef uint32_t mark_mask
    cdef uint32_t mark_shift
    cdef int batch_size
    cdef QueuedPacket packets[MAX_BATCH]
    cdef Verdict verdicts[MAX_BATCH]
    cdef Work work[MAX_BATCH]
    cdef list payloads                 # replacement payloads, alive until the batch is sent
    cdef DecidedFlow* decided
    cdef uint16_t* decided_tags        # per slot: 0 empty, else 16 bits of the flow's hash (| 1)
    cdef char* decided_names           # per slot: DECIDED_NAME bytes
    cdef uint32_t decided_mask
    cdef uint32_t evictions
    cdef double decided_lifetime
    # Decisions of the batch being classified, remembered once it is done: the table's slots
    # are scattered over megabytes, and writing them together overlaps their cache misses.
    cdef int deferred[MAX_BATCH]
    cdef int deferred_count
    cdef uint64_t deferred_bits      # bit (hash & 63) of each deferred flow: most packets skip the scan
    cdef bint deferring
    cdef HttpFollower follower         # allowed plain-HTTP flows whose every request is judged
    cdef NameResult followed_head      # a request head the follower found
    cdef Work candidate                # one request's decision, before the strictest is kept
    cdef NameCache names_seen          # what the classifier's tables said about recent names
    cdef NameSet special_names         # names the handler rewrites or answers (DNS)
    cdef NameSet url_hosts             # plain-HTTP hosts with URL-prefix rules
    cdef uint64_t* decisions           # group x (list + 1) x 4 codes: flows decided
    cdef Counters counters
    cdef object handler

    def __cinit__(self, PacketQueue queue, FlowExtractor extractor not None, object handler, uint32_t mark_mask,
                  int batch_size=64, int decided_flows=65536, double decided_lifetime=86400.0):
        cdef uint32_t size = DECIDED_PROBES
        if mark_mask == 0 or not 1 <= batch_size <= MAX_BATCH or decided_flows < 1:
            raise ValueError("mark mask, batch size (1-256) and decided flows must be set")
        self.queue, self.extractor, self.handler = queue, extractor, handler
        self.quic = QuicFlows()
        self.mark_mask = mark_mask
        self.mark_shift = 0
        while not (mark_mask >> self.mark_shift) & 1:
            self.mark_shift += 1
        if (mark_mask >> self.mark_shift) < CODE_FIELD_MIN:
            raise ValueError("the mark mask needs at least 4 contiguous bits (codes 0-8)")
        # Plain-HTTP connections are a few of the decided flows: a quarter of the table's
        # size keeps the follower's slots (about 90 bytes each) in fewer pages and cache lines.
        self.follower = HttpFollower(max(DECIDED_PROBES, decided_flows // 4))
        self.batch_size = batch_size
        while size < <uint32_t>decided_flows:
            size <<= 1
        self.decided = <DecidedFlow*>ef_calloc_lines(size, sizeof(DecidedFlow))
        self.decided_tags = <uint16_t*>calloc(size + DECIDED_PROBES, sizeof(uint16_t))
        self.decided_names = <char*>calloc(size, DECIDED_NAME)  # untouched pages cost nothing
        if self.decided == NULL or self.decided_tags == NULL or self.decided_names == NULL \
                or name_cache_init(&self.names_seen, NAME_CACHE_NAMES) < 0:
            raise MemoryError()
        self.decided_mask = size - 1
        self.decided_lifetime = decided_lifetime
        self.payloads = []

    def __dealloc__(self):
        free(self.decided)
        free(self.decided_tags)
        free(self.decided_names)
        name_cache_free(&self.names_seen)
        free(self.special_names.slots)
        free(self.url_hosts.slots)
        free(self.groups)
        free(self.decisions)

    # ---- policy

    def set_policy(self, Classifier classifier, list groups, special_names, url_hosts):
        """groups: (default action code, safe_search, quic_block, bypass_shield, Unnamed) per group id;
        special_names: DNS names the handler rewrites or answers; url_hosts: hosts with
        URL-prefix rules. The old decision counters are returned (then start again)."""
        cdef GroupSettings* settings = <GroupSettings*>calloc(max(1, len(groups)), sizeof(GroupSettings))
        cdef uint64_t* decisions
        cdef int index
        if settings == NULL:
            raise MemoryError()
        if len(groups) != classifier.group_count:
            free(settings)
            raise ValueError("one settings tuple per group")
        for index, (action, safe_search, quic_block, bypass_shield, unnamed) in enumerate(groups):
            settings[index].default_action = action
            settings[index].safe_search = safe_search
            settings[index].quic_block = quic_block
            settings[index].bypass_shield = bypass_shield
            settings[index].unnamed = unnamed
        decisions = <uint64_t*>calloc(classifier.group_count * (classifier.list_count + 1) * 4, sizeof(uint64_t))
        if decisions == NULL:
            free(settings)
            raise MemoryError()
        previous = self.decision_counts()
        try:
            replace_name_set(&self.special_names, special_names)
            replace_name_set(&self.url_hosts, url_hosts)
        except MemoryError:
            free(settings)
            free(decisions)
            raise
        free(self.groups)
        free(self.decisions)
        self.groups, self.decisions = settings, decisions
        self.group_count, self.list_count = classifier.group_count, classifier.list_count
        self.classifier = classifier
        name_cache_clear(&self.names_seen)   # it held the old tables' answers
        return previous

    # ---- the loop

    def serve(self, double seconds, int timeout_ms=50):
        """Runs batches until `seconds` have passed; returns the packets handled."""
        cdef double until = wall_clock() + seconds
        cdef uint64_t before = self.counters.packets
        if self.classifier is None or self.queue is None:
            raise RuntimeError("serve needs a queue and a policy (set_policy)")
        while wall_clock() < until:
            self.run_batch(timeout_ms)
        return self.counters.packets - before

    cdef int run_batch(self, int timeout_ms) except -1:
        cdef int count, i, slow = 0
        cdef double now
        with nogil:
            count = self.queue.receive(self.packets, self.batch_size, timeout_ms)
        if count <= 0:
            if count < 0:
                self.counters.receive_errors += 1
            return 0
        with nogil:
            now = wall_clock()
            self.deferring = True
            for i in range(count):
                self.classify(i, now)
                if self.work[i].slow != SLOW_NONE:
                    slow += 1
            self.remember_deferred(now)
        if slow:
            self.counters.slow_packets += slow
            self.handler.handle(self, count)
        with nogil:
            for i in range(count):
                self.count(i)
            if self.queue.send_verdicts(self.verdicts, count) < 0:
                self.counters.send_errors += 1
        if slow:
            # Forged packets go out only now: a reset to the server must follow the segments
            # of the same batch that were just accepted, or the server would not take it.
            self.handler.after_verdicts()
        self.payloads.clear()
        self.counters.batches += 1
        return count

    cdef void classify(self, int i, double now) noexcept nogil:
        cdef const QueuedPacket* queued = &self.packets[i]
        cdef Verdict* verdict = &self.verdicts[i]
        cdef Work* work = &self.work[i]
        cdef Packet* packet = &self.extractor.packet
        cdef int kind, how = CLIENT_BY_DEFAULT, group
        cdef uint8_t mark_code = (queued.mark & self.mark_mask) >> self.mark_shift
        cdef DecidedFlow* known
        cdef int known_code
        cdef Decision decision
        verdict.packet_id = queued.packet_id
        verdict.payload = NULL
        verdict.payload_len = 0
        self.mark(i, CODE_PASS)
        work.slow = SLOW_NONE
        work.kind = KIND_NONE
        work.action = NO_RULE
        work.code = CODE_UNDECIDED
        work.reason = REASON_RULE
        work.decided = 0
        work.counted = 0
        work.list_id = -1
        work.tier = -1
        work.name_len = 0
        work.path_len = 0
        work.ech = 0
        self.counters.packets += 1

        # An offloaded (partial) checksum, or a packet copied short, cannot be verified.
        self.extractor.checksum_ready = not (queued.skb_info & (SKB_CSUM_NOT_READY | SKB_GSO)) and \
            queued.cap_len <= queued.payload_len
        kind = self.extractor.process(queued.payload, queued.payload_len, now)
        if self.extractor.decoded != DECODE_OK:
            if self.extractor.decoded == DECODE_FRAGMENT or self.extractor.decoded == DECODE_OTHER:
                self.counters.fragments_accepted += 1   # conntrack reassembles; not ours to judge
            else:
                verdict.verdict = NF_DROP               # truncated or malformed: counted, dropped
                self.counters.malformed_dropped += 1
            return
        work.kind = kind
        if kind == KIND_DNS or kind == KIND_SNI or kind == KIND_HTTP_HOST:
            # its decision comes after the group and the decided flows are looked up
            name_cache_prefetch(&self.names_seen, <const uint8_t*>self.extractor.result.name,
                                self.extractor.result.name_len)
        fill_flow(&work.flow, packet)
        work.flow_hash = flow_hash(&work.flow)
        group = self.classifier.group_for(queued.hwaddr if queued.hwaddr_len == 6 else NULL, queued.indev,
                                          packet.src, 4 if packet.ip_version == 4 else 16, &how)
        work.group = group

        if packet.protocol == PROTO_UDP and packet.sport == DNS_PORT and packet.dport != DNS_PORT:
            work.slow = SLOW_DNS_REPLY                  # only safe-search replies are queued
            return
        if kind == KIND_DNS:
            self.classify_dns(i, now)
            return

        if mark_code == CODE_HTTP_FOLLOW and packet.protocol == PROTO_TCP:
            self.follow_http(i, now)
            return
        # A packet of a flow decided a moment ago (queued before the mark was saved) gets the
        # same verdict. A SYN starts a new connection, which is always judged afresh: the
        # decision remembered for its 5-tuple belonged to an earlier connection (a client that
        # reuses its port, or a CDN address shared by many sites) and must not decide this one.
        # (Evasion checks come after: a decided flow's later packets are not looked at again.)
        if packet.protocol == PROTO_TCP and packet.tcp_flags & TCP_SYN:
            self.forget_decided(&work.flow, work.flow_hash)
        else:
            known_code = self.deferred_code(work)
            if known_code < 0:
                known = self.find_decided(&work.flow, work.flow_hash, now)
                if known != NULL:
                    known_code = known.code
            if known_code == CODE_HTTP_FOLLOW:
                self.follow_http(i, now)
                return
            if known_code >= 0:
                self.counters.repeated += 1
                self.mark(i, <uint8_t>known_code)
                return

        if self.stopped_as_evasion(i, mark_code, now):
            return
        if packet.protocol == PROTO_UDP and (kind == KIND_QUIC_INITIAL or packet.dport == QUIC_PORT):
            kind = self.classify_quic(i, kind, mark_code, now)
            if kind == KIND_NONE:
                return
        if kind == KIND_SNI or kind == KIND_QUIC_INITIAL:
            work.ech = self.extractor.result.ech
            self.judge_request(work, &self.extractor.result, now)
            work.kind = kind
            self.decide(i, now)
            if work.code == CODE_ALLOW and self.groups[group].safe_search and work.slow == SLOW_NONE and \
                    name_in_set(&self.special_names, work.name, work.name_len):
                work.slow = SLOW_SAFE_SEARCH
            return
        if kind == KIND_HTTP_HOST or self.extractor.result.head_len:
            self.first_http_request(i, now)
            return
        if packet.dport == DOT_PORT and self.groups[group].bypass_shield:
            self.override_reason(work, ACTION_BLOCK, REASON_DOT)
            self.decide(i, now)
            return
        if mark_code == CODE_BOUND or self.extractor.settled or packet.protocol == PROTO_UDP:
            # No name is coming: the destination address and the group's default decide.
            decision = self.classifier.decide_flow(group, NULL, 0, packet.dst, 4 if packet.ip_version == 4 else 16,
                                                   <int64_t>now, NULL)
            self.take(work, &decision)
            if decision.action == NO_RULE:
                self.apply_unnamed(work, self.extractor.result.invalid_name, mark_code == CODE_BOUND)
            self.decide(i, now)
            return
        self.counters.undecided += 1

    cdef int classify_quic(self, int i, int kind, uint8_t mark_code, double now) noexcept nogil:
        """A UDP datagram to 443, or a QUIC Initial to any port. KIND_QUIC_INITIAL: the
        ClientHello's name is in the extractor's result, to be judged like an SNI; KIND_NONE:
        packet i is handled (passed while the ClientHello is incomplete, or decided); -1: no
        name, for the destination address and the group's default to decide."""
        cdef const Packet* packet = &self.extractor.packet
        cdef Work* work = &self.work[i]
        cdef QuicStatus status
        if kind == KIND_QUIC_INITIAL and self.groups[work.group].quic_block:
            self.override_reason(work, ACTION_BLOCK, REASON_QUIC)
            self.decide(i, now)
            return KIND_NONE
        status = self.quic.feed(packet, now, &self.extractor.result)
        if status == QUIC_NAME:
            work.kind = KIND_QUIC_INITIAL
            return KIND_QUIC_INITIAL
        if status == QUIC_PENDING:
            if mark_code != CODE_BOUND:
                self.counters.undecided += 1
                return KIND_NONE
            self.quic.forget(packet)    # the inspection bound came first: no name
        if packet.dport == QUIC_PORT and self.groups[work.group].bypass_shield:
            # Not a QUIC v1/v2 Initial the gateway can read (another version, gQUIC, another
            # protocol), or a ClientHello without a name: dropped, so the client falls back
            # to TCP, where the name can be read.
            self.override_reason(work, ACTION_DROP, REASON_EVASION)
            self.decide(i, now)
            return KIND_NONE
        return -1

    # ---- names a pupil's client may blur (issue 13): unreadable, conflicting, absent

    cdef void apply_unnamed(self, Work* work, bint unreadable, bint bound) noexcept nogil:
        """A flow without a readable name that no address rule decided: its group's setting
        for such flows, on top of the group's default already taken."""
        cdef const Packet* packet = &self.extractor.packet
        cdef const GroupSettings* settings = &self.groups[work.group]
        cdef bint tcp = packet.protocol == PROTO_TCP
        if tcp and unreadable and settings.bypass_shield:
            self.override_reason(work, ACTION_BLOCK, REASON_EVASION)
        elif tcp and settings.unnamed != UNNAMED_ALLOW and (packet.dport == HTTP_PORT or packet.dport == HTTPS_PORT):
            self.override_reason(work, ACTION_BLOCK, REASON_EVASION)
        elif settings.unnamed == UNNAMED_BLOCK_ALL and packet.dport != DNS_PORT and \
                not (packet.protocol == PROTO_UDP and (packet.dport == NTP_PORT or packet.dport == QUIC_PORT)):
            self.override_reason(work, ACTION_BLOCK, REASON_RULE)   # a default-deny egress: an ordinary block
        elif bound:
            work.reason = REASON_BOUND

    cdef int judge_request(self, Work* work, const NameResult* result, double now) noexcept nogil:
        """Decides one ClientHello or request head into work (its name, path and decision);
        returns its rank. A second, different name is judged too and the stricter decision
        wins; for groups with the bypass shield a second name or an unreadable one is evasion."""
        cdef const Packet* packet = &self.extractor.packet
        cdef Decision decision, other
        cdef int address_length = 4 if packet.ip_version == 4 else 16
        work.kind = KIND_HTTP_HOST if result.head_len else KIND_SNI
        work.name_len = result.name_len if result.kind != KIND_NONE else 0
        memcpy(work.name, result.name, work.name_len)
        work.name[work.name_len] = 0
        work.reason = REASON_RULE
        work.path_len = result.path_len if result.head_len else 0
        memcpy(work.path, result.path, work.path_len)
        work.path[work.path_len] = 0
        if (result.conflict or result.invalid_name or (result.head_len and result.body == BODY_UNREADABLE)) \
                and self.groups[work.group].bypass_shield:
            self.override_reason(work, ACTION_BLOCK, REASON_EVASION)
            return RANK_BLOCK
        if result.kind == KIND_NONE:
            decision = self.classifier.decide_flow(work.group, NULL, 0, packet.dst, address_length, <int64_t>now, NULL)
            self.take(work, &decision)
            if decision.action == NO_RULE:
                self.apply_unnamed(work, result.invalid_name, False)
            return rank_of(work)
        decision = self.classifier.decide_flow(work.group, <const uint8_t*>result.name, result.name_len, packet.dst,
                                               address_length, <int64_t>now, &self.names_seen)
        if result.conflict:
            other = self.classifier.decide_flow(work.group, <const uint8_t*>result.alt_name, result.alt_name_len,
                                                packet.dst, address_length, <int64_t>now, &self.names_seen)
            if self.decision_rank(&other, work.group) > self.decision_rank(&decision, work.group):
                decision = other
                work.name_len = result.alt_name_len
                memcpy(work.name, result.alt_name, work.name_len + 1)
        self.take(work, &decision)
        if result.head_len and name_in_set(&self.url_hosts, work.name, work.name_len):
            return RANK_URL                    # (a URL prefix may allow a path of a blocked host)
        return rank_of(work)

    cdef int decision_rank(self, const Decision* decision, int group) noexcept nogil:
        cdef uint8_t action = decision.action if decision.action != NO_RULE else self.groups[group].default_action
        if code_for(action) != CODE_ALLOW:
            return RANK_BLOCK
        return RANK_MONITOR if action == ACTION_MONITOR else RANK_ALLOW

    cdef void first_http_request(self, int i, double now) noexcept nogil:
        """The first request head of a plain-HTTP flow, and the pipelined ones behind it in the
        bytes already seen: the strictest decides. An allowed flow is followed (CODE_HTTP_FOLLOW):
        the kernel keeps queueing the client's data, and every later request is judged."""
        cdef const Packet* packet = &self.extractor.packet
        cdef int rank = self.judge_request(&self.work[i], &self.extractor.result, now)
        cdef bint follow = self.extractor.result.body != BODY_TUNNEL and \
            self.extractor.result.body != BODY_UNREADABLE    # (evasion already, for shielded groups)
        if follow:
            self.follower.start(packet, self.extractor.http_rest_seq, &self.extractor.result, now)
            if rank < RANK_BLOCK and self.extractor.http_rest_len:
                rank = self.follow_heads(i, self.extractor.http_rest, self.extractor.http_rest_len,
                                         self.extractor.http_rest_seq, rank, &follow, now)
                if rank == FOLLOW_GAP_RANK:
                    rank = RANK_ALLOW
        self.finish_http(i, rank, follow, True, now)

    cdef void follow_http(self, int i, double now) noexcept nogil:
        """A client packet of a followed plain-HTTP flow: every request head it completes is judged."""
        cdef Work* work = &self.work[i]
        cdef const Packet* packet = &self.extractor.packet
        cdef bint follow = True
        cdef int rank
        work.kind = KIND_HTTP_HOST
        if packet.payload_len == 0:
            self.mark(i, CODE_HTTP_FOLLOW)
            return
        rank = self.follow_heads(i, packet.payload, packet.payload_len, packet.seq, RANK_NONE, &follow, now)
        if rank == FOLLOW_GAP_RANK:
            self.verdicts[i].verdict = NF_DROP   # past a hole: the client sends it again in order
            return
        if rank == RANK_NONE and follow:
            self.mark(i, CODE_HTTP_FOLLOW)       # body bytes, or a head still incomplete
            return
        self.finish_http(i, rank, follow, False, now)

    cdef int follow_heads(self, int i, const uint8_t* data, Py_ssize_t length, uint32_t seq, int rank,
                          bint* follow, double now) noexcept nogil:
        """Feeds the follower and judges each request head it finds, keeping the strictest
        decision in work[i]; returns the rank kept (FOLLOW_GAP_RANK: an out-of-order segment).
        *follow goes False when the stream stops being HTTP/1 the gateway can read."""
        cdef Work* work = &self.work[i]
        cdef Work* candidate = &self.candidate
        cdef const Packet* packet = &self.extractor.packet
        cdef FollowStatus status
        cdef int found
        cdef bint shielded = self.groups[work.group].bypass_shield
        while rank < RANK_BLOCK:
            status = self.follower.feed(packet, data, length, seq, &self.followed_head, now)
            if status == FOLLOW_UNKNOWN:
                if rank != RANK_NONE or length == 0 or not (b'A' <= data[0] <= b'Z'):
                    return rank                # mid-body with no state (evicted): let it be
                self.follower.start(packet, seq, NULL, now)   # a request starts here: follow again
                continue
            if status == FOLLOW_GAP:
                return FOLLOW_GAP_RANK
            if status == FOLLOW_END:
                return rank
            if status == FOLLOW_UNREADABLE:
                follow[0] = False
                if shielded:
                    self.override_reason(work, ACTION_BLOCK, REASON_EVASION)
                    work.kind = KIND_HTTP_HOST
                    return RANK_BLOCK
                if rank == RANK_NONE:          # handed to the kernel: an allow, no rule involved
                    self.override_reason(work, ACTION_ALLOW, REASON_RULE)
                    return RANK_ALLOW
                return rank
            candidate.group = work.group
            found = self.judge_request(candidate, &self.followed_head, now)
            if self.followed_head.body == BODY_TUNNEL or self.followed_head.body == BODY_UNREADABLE:
                follow[0] = False
            if found == RANK_URL and rank == RANK_URL:
                # One packet, two requests whose paths decide: the slow path reads one of them.
                if shielded:
                    self.override_reason(candidate, ACTION_BLOCK, REASON_EVASION)
                    found = RANK_BLOCK
                else:
                    found = rank_of(candidate)
            if found > rank:
                keep_decision(work, candidate)
                rank = found
        return rank

    cdef void finish_http(self, int i, int rank, bint follow, bint first, double now) noexcept nogil:
        """The packet's verdict from the strictest request in it."""
        cdef Work* work = &self.work[i]
        if rank == RANK_URL:
            work.slow = SLOW_HTTP_URL          # decide_packet follows the flow when it allows
            return
        if work.code == CODE_ALLOW:
            work.code = CODE_HTTP_FOLLOW if follow else CODE_ALLOW
            if not follow:
                self.follower.stop(&self.extractor.packet, now)
            if not first and follow:
                # A later allowed request: counted; the flow stays as it was decided.
                self.mark(i, work.code)
                work.counted = 1
                if work.action == ACTION_MONITOR:
                    work.slow = SLOW_EVENT
                return
        self.decide(i, now)
        if work.code == CODE_REJECT and work.kind == KIND_HTTP_HOST:
            work.slow = SLOW_HTTP_BLOCK

    cdef bint stopped_as_evasion(self, int i, uint8_t mark_code, double now) noexcept nogil:
        """Handles a TCP packet whose flow shows a circumvention attempt (decoys, differing
        overlaps, urgent data, too many holes) or is past the kernel's packet bound with its
        ClientHello or request head unfinished. Shielded groups: reset, reason evasion. Any
        group: a handshake still under way within the bounds stays queued (undecided)."""
        cdef Work* work = &self.work[i]
        cdef bint shielded = self.groups[work.group].bypass_shield
        cdef int kind = work.kind, handshake
        if self.extractor.packet.protocol != PROTO_TCP or self.extractor.packet.dport == DOT_PORT:
            return False
        if mark_code == CODE_BOUND and kind == KIND_NONE and not self.extractor.settled:
            handshake = self.extractor.handshake_state(now)
            if handshake == HANDSHAKE_PENDING:
                self.counters.held_past_bound += 1
                self.counters.undecided += 1
                return True
        if self.extractor.evasion == EVASION_NONE or not shielded:
            return False
        self.override_reason(work, ACTION_BLOCK, REASON_EVASION)
        self.decide(i, now)
        return True

    cdef void classify_dns(self, int i, double now) noexcept nogil:
        cdef Decision decision
        cdef const Packet* packet = &self.extractor.packet
        cdef Work* work = &self.work[i]
        self.counters.dns_queries += 1
        work.name_len = self.extractor.result.name_len
        memcpy(work.name, self.extractor.result.name, work.name_len + 1)
        work.dns_qtype = self.extractor.result.dns_qtype
        decision = self.classifier.decide_flow(work.group, <const uint8_t*>work.name, work.name_len, NULL, 0,
                                               <int64_t>now, &self.names_seen)
        self.take(work, &decision)
        work.counted = 1
        if work.code == CODE_ALLOW:
            if (self.groups[work.group].safe_search or self.groups[work.group].bypass_shield) and \
                    name_in_set(&self.special_names, work.name, work.name_len):
                work.slow = SLOW_DNS_SPECIAL
            elif self.groups[work.group].bypass_shield and (work.dns_qtype == DNS_TYPE_SVCB or
                                                            work.dns_qtype == DNS_TYPE_HTTPS):
                # Without HTTPS/SVCB records a browser learns no ECH keys (nor encrypted DNS
                # servers), so its ClientHello keeps the real server name in the clear.
                work.slow = SLOW_DNS_SPECIAL
            elif work.action == ACTION_MONITOR:
                work.slow = SLOW_EVENT
            return
        self.counters.dns_blocked += 1
        if packet.protocol == PROTO_TCP:
            self.mark(i, work.code)                # DNS over TCP: reset (or drop) the connection
            work.slow = SLOW_EVENT
        elif work.code == CODE_DROP:
            self.verdicts[i].verdict = NF_DROP
            work.slow = SLOW_EVENT
        else:
            work.slow = SLOW_DNS_ANSWER

    cdef inline void take(self, Work* work, const Decision* decision) noexcept nogil:
        """The classifier's decision, or the group's default when no rule matched."""
        work.action = decision.action if decision.action != NO_RULE else self.groups[work.group].default_action
        work.code = code_for(work.action)
        work.list_id = decision.list_id
        work.tier = decision.tier if decision.action != NO_RULE else -1
        work.order = decision.order

    cdef inline void override_reason(self, Work* work, uint8_t action, uint8_t reason) noexcept nogil:
        work.action = action
        work.code = code_for(action)
        work.reason = reason
        work.list_id = -1
        work.tier = -1

    cdef inline void mark(self, int i, uint8_t code) noexcept nogil:
        """Packet i goes through the rules again with the flow's verdict code in its mark."""
        self.verdicts[i].verdict = NF_REPEAT
        self.verdicts[i].set_mark = 1
        self.verdicts[i].mark = (self.packets[i].mark & ~self.mark_mask) | \
                                ((<uint32_t>code << self.mark_shift) & self.mark_mask)

    cdef void decide(self, int i, double now) noexcept nogil:
        """Marks packet i's flow with work[i].code and remembers the decision."""
        cdef Work* work = &self.work[i]
        self.mark(i, work.code)
        work.decided = 1
        if self.deferring:
            self.deferred[self.deferred_count] = i
            self.deferred_count += 1
            self.deferred_bits |= <uint64_t>1 << (work.flow_hash & 63)
        else:
            self.remember(work, now)
        if work.slow == SLOW_NONE and (work.code != CODE_ALLOW or work.action == ACTION_MONITOR):
            work.slow = SLOW_EVENT

    # ---- decided flows

    cdef inline uint32_t decided_bucket(self, uint64_t hash) noexcept nogil:
        return <uint32_t>hash & self.decided_mask & ~(<uint32_t>DECIDED_PROBES - 1)

    cdef uint32_t decided_slot(self, const FlowId* flow, uint64_t hash) noexcept nogil:
        """The slot holding a flow's remembered decision (hash: its flow_hash), expired or
        not, else NO_SLOT; the tags let most misses read one cache line."""
        cdef uint32_t first = self.decided_bucket(hash), i
        cdef uint16_t tag = <uint16_t>(hash >> 48) | 1
        for i in range(first, first + DECIDED_PROBES):
            if self.decided_tags[i] == tag and self.decided[i].hash == hash and \
                    memcmp(&self.decided[i].flow, flow, sizeof(FlowId)) == 0:
                return i
        return NO_SLOT

    cdef DecidedFlow* find_decided(self, const FlowId* flow, uint64_t hash, double now) noexcept nogil:
        """The remembered decision of a flow, unless it has expired."""
        cdef uint32_t i = self.decided_slot(flow, hash)
        if i == NO_SLOT or now - self.decided[i].decided_at > self.decided_lifetime:
            return NULL
        return &self.decided[i]

    cdef void forget_decided(self, const FlowId* flow, uint64_t hash) noexcept nogil:
        """Drops the remembered decision of a flow; lookups scan the whole bucket, so an
        empty tag needs no tombstone."""
        cdef uint32_t i = self.decided_slot(flow, hash)
        if i != NO_SLOT:
            self.decided_tags[i] = 0
            self.counters.decided_forgotten += 1

    cdef int deferred_code(self, const Work* work) noexcept nogil:
        """The code of this flow when a packet before it in the batch decided it, else -1."""
        cdef int k
        cdef const Work* earlier
        if not (self.deferred_bits >> (work.flow_hash & 63)) & 1:
            return -1
        for k in range(self.deferred_count):
            earlier = &self.work[self.deferred[k]]
            if earlier.flow_hash == work.flow_hash and memcmp(&earlier.flow, &work.flow, sizeof(FlowId)) == 0:
                return earlier.code
        return -1

    cdef void remember_deferred(self, double now) noexcept nogil:
        """Remembers the batch's decisions: first a prefetch of the slot each will most likely
        take (the next evictions as they would come), then the writes."""
        cdef int k
        cdef bint evicts
        self.deferring = False
        for k in range(self.deferred_count):
            EF_PREFETCH_WRITE(&self.decided[self.slot_for(&self.work[self.deferred[k]], self.evictions + k, &evicts)])
        for k in range(self.deferred_count):
            self.remember(&self.work[self.deferred[k]], now)
        self.deferred_count = 0
        self.deferred_bits = 0

    cdef uint32_t slot_for(self, const Work* work, uint32_t eviction, bint* evicts) noexcept nogil:
        """Where the decision of work's flow goes: the flow's own slot, else the bucket's first
        empty one, else (a full bucket: the slots take turns going, cheaper than finding the
        oldest) the one `eviction` picks, and then *evicts is set."""
        cdef uint32_t first = self.decided_bucket(work.flow_hash), i, chosen = NO_SLOT
        cdef uint16_t tag = <uint16_t>(work.flow_hash >> 48) | 1
        evicts[0] = False
        for i in range(first, first + DECIDED_PROBES):
            if self.decided_tags[i] == tag and self.decided[i].hash == work.flow_hash and \
                    memcmp(&self.decided[i].flow, &work.flow, sizeof(FlowId)) == 0:
                return i
            if self.decided_tags[i] == 0 and chosen == NO_SLOT:
                chosen = i
        if chosen == NO_SLOT:
            evicts[0] = True
            chosen = first + (eviction & (DECIDED_PROBES - 1))
        return chosen

    cdef void remember(self, const Work* work, double now) noexcept nogil:
        cdef uint64_t hash = work.flow_hash
        cdef bint evicts
        cdef uint32_t chosen = self.slot_for(work, self.evictions, &evicts)
        cdef DecidedFlow* slot
        if evicts:
            self.evictions += 1
            self.counters.decided_evicted += 1
        slot = &self.decided[chosen]
        self.decided_tags[chosen] = <uint16_t>(hash >> 48) | 1
        slot.hash = hash
        slot.flow = work.flow
        slot.decided_at = now
        slot.group = <uint16_t>work.group
        slot.code = work.code
        slot.kind = work.kind
        slot.name_len = <uint8_t>min(work.name_len, DECIDED_NAME - 1)
        if slot.name_len:
            memcpy(self.decided_names + <size_t>chosen * DECIDED_NAME, work.name, slot.name_len)

    cdef void count(self, int i) noexcept nogil:
        cdef Work* work = &self.work[i]
        cdef size_t cell
        cdef uint8_t code
        if not (work.decided or work.counted):
            return
        code = CODE_ALLOW if work.code == CODE_HTTP_FOLLOW else work.code
        if work.decided:
            self.counters.flows_decided += 1
            self.counters.by_code[code & 15] += 1
            if work.reason == REASON_EVASION:
                self.counters.evasion += 1
        if 0 <= work.group < self.group_count and -1 <= work.list_id < self.list_count:
            cell = (<size_t>work.group * (self.list_count + 1) + <size_t>(work.list_id + 1)) * 4
            self.decisions[cell + (code & 3)] += 1

    # ---- the handler's view of a batch

    def slow_packets(self, int count):
        """(index, slow reason) of the packets the handler must look at."""
        return [(i, self.work[i].slow) for i in range(count) if self.work[i].slow != SLOW_NONE]

    def packet(self, int i):
        """What the handler needs of packet i: a dict (a copy; the payload only lives in the batch)."""
        cdef Work* work = &self.work[i]
        cdef int width = 4 if work.flow.ip_version == 4 else 16
        return {
            "payload": PyBytes_FromStringAndSize(<const char*>self.packets[i].payload, self.packets[i].payload_len),
            "mark": self.packets[i].mark,
            "verdict": self.verdicts[i].verdict,
            "mark_code": (self.verdicts[i].mark & self.mark_mask) >> self.mark_shift if self.verdicts[i].set_mark else None,
            "slow": work.slow,
            "kind": work.kind,
            "action": work.action,
            "code": work.code,
            "reason": work.reason,
            "group": work.group,
            "list_id": work.list_id,
            "tier": work.tier,
            "order": work.order,
            "ech": bool(work.ech),
            "dns_qtype": work.dns_qtype,
            "name": work.name[:work.name_len].decode("ascii") if work.name_len else None,
            "path": work.path[:work.path_len].decode("latin-1") if work.path_len else None,
            "ip_version": work.flow.ip_version,
            "protocol": work.flow.protocol,
            "src": PyBytes_FromStringAndSize(<const char*>work.flow.src, width),
            "dst": PyBytes_FromStringAndSize(<const char*>work.flow.dst, width),
            "sport": work.flow.sport,
            "dport": work.flow.dport,
        }

    def decide_packet(self, int i, int action, int code, int list_id=-1, int tier=-1, int reason=REASON_RULE):
        """The handler decided packet i's flow (QUIC, URL prefix): mark and remember it. An
        allowed plain-HTTP flow stays followed (its later requests are judged too)."""
        cdef Work* work = &self.work[i]
        if work.kind == KIND_HTTP_HOST and code == CODE_ALLOW:
            code = CODE_HTTP_FOLLOW
        work.action = action
        work.code = code
        work.list_id = list_id
        work.tier = tier
        work.reason = reason
        self.decide(i, wall_clock())

    def set_name(self, int i, str name):
        """The name the handler found (a QUIC Initial's SNI), for the decided-flow table."""
        cdef bytes raw = name.encode("ascii")
        cdef Work* work = &self.work[i]
        work.name_len = min(len(raw), 254)
        memcpy(work.name, PyBytes_AS_STRING(raw), work.name_len)
        work.name[work.name_len] = 0

    def set_verdict(self, int i, int verdict, bytes payload=None, code=None):
        """The handler's verdict for packet i (accept, drop or repeat), optionally with a
        replaced payload and a verdict code in its packet mark (without deciding the flow)."""
        cdef Verdict* out = &self.verdicts[i]
        out.set_mark = 0
        out.payload = NULL
        out.payload_len = 0
        if code is not None:
            self.mark(i, code)
        out.verdict = verdict
        if payload is not None:
            self.payloads.append(payload)
            out.payload = <const uint8_t*>PyBytes_AS_STRING(payload)
            out.payload_len = <uint32_t>PyBytes_GET_SIZE(payload)

    def classify_name(self, int group, str name, bytes address, double now, url_matches=()):
        """The classifier's raw decision for the handler (QUIC SNI, URL prefixes)."""
        return self.classifier.decide(group, name.encode("ascii"), address, now, url_matches)

    def decided_flows(self):
        """Every remembered decision: (ip_version, protocol, src, dst, sport, dport, group, code, name)."""
        cdef uint32_t i
        cdef DecidedFlow* slot
        cdef int width
        found = []
        cdef const char* name
        for i in range(self.decided_mask + 1):
            if self.decided_tags[i] == 0:
                continue
            slot = &self.decided[i]
            name = self.decided_names + <size_t>i * DECIDED_NAME
            width = 4 if slot.flow.ip_version == 4 else 16
            found.append((slot.flow.ip_version, slot.flow.protocol,
                          PyBytes_FromStringAndSize(<const char*>slot.flow.src, width),
                          PyBytes_FromStringAndSize(<const char*>slot.flow.dst, width),
                          slot.flow.sport, slot.flow.dport, slot.group, slot.code,
                          name[:slot.name_len].decode("ascii") if slot.name_len else None))
        return found

    def update_decided(self, int ip_version, int protocol, bytes src, bytes dst, int sport, int dport, int code):
        """A re-decided flow's new code, so queued packets of it get the new verdict too."""
        cdef FlowId flow
        cdef DecidedFlow* slot
        memset(&flow, 0, sizeof(FlowId))
        flow.ip_version, flow.protocol, flow.sport, flow.dport = ip_version, protocol, sport, dport
        memcpy(flow.src, PyBytes_AS_STRING(src), min(len(src), 16))
        memcpy(flow.dst, PyBytes_AS_STRING(dst), min(len(dst), 16))
        slot = self.find_decided(&flow, flow_hash(&flow), wall_clock())
        if slot != NULL:
            slot.code = code

    def classify_offline(self, list packets, double now, uint32_t mark=0):
        """The classify pass over IP packets given as bytes, as if they came from the queue
        (each with packet mark `mark`), in batches: no verdict is sent and no slow path runs.
        For benchmarks and tests of the loop without a queue. Returns (names found, named
        decisions that block, [(index, slow reason, name or None)])."""
        cdef Py_ssize_t start, n = len(packets), names = 0, blocked = 0
        cdef int j, batch
        cdef object packet
        cdef Work* work
        if self.classifier is None:
            raise RuntimeError("set_policy before classify_offline")
        slow = []
        for start in range(0, n, self.batch_size):
            batch = <int>min(self.batch_size, n - start)
            for j in range(batch):
                packet = packets[start + j]
                if type(packet) is not bytes:
                    raise TypeError("classify_offline takes a list of bytes")
                memset(&self.packets[j], 0, sizeof(QueuedPacket))
                self.packets[j].packet_id = <uint32_t>j
                self.packets[j].mark = mark    # as the rules set it (the inspection bound's code)
                self.packets[j].payload = <const uint8_t*>PyBytes_AS_STRING(packet)
                self.packets[j].payload_len = <uint32_t>PyBytes_GET_SIZE(packet)
                self.packets[j].mark = mark
            with nogil:
                self.deferring = True
                for j in range(batch):
                    self.classify(j, now)
                self.remember_deferred(now)
                for j in range(batch):
                    self.count(j)
                    work = &self.work[j]
                    if work.kind == KIND_DNS or work.kind == KIND_SNI or work.kind == KIND_HTTP_HOST or \
                            (work.kind == KIND_QUIC_INITIAL and work.name_len):
                        names += 1
                        if (work.decided or work.counted) and work.code != CODE_ALLOW and \
                                work.code != CODE_HTTP_FOLLOW:
                            blocked += 1  # (a host with URL-prefix rules is decided by the slow path)
            for j in range(batch):
                work = &self.work[j]
                if work.slow != SLOW_NONE:
                    slow.append((start + j, work.slow, work.name[:work.name_len].decode("ascii") or None))
        return names, blocked, slow

    @property
    def quic_stats(self):
        """The QUIC Initial reader's counters."""
        return self.quic.stats

    def decision_counts(self):
        """{(group id, list id or -1, code): flows} since the policy was set."""
        cdef size_t cell
        cdef int group, list_id, code
        counts = {}
        if self.decisions == NULL:
            return counts
        for group in range(self.group_count):
            for list_id in range(-1, self.list_count):
                cell = (<size_t>group * (self.list_count + 1) + <size_t>(list_id + 1)) * 4
                for code in range(4):
                    if self.decisions[cell + code]:
                        counts[(group, list_id, code)] = self.decisions[cell + code]
        return counts

    @property
    def stats(self):
        counters = dict(self.counters)
        by_code = counters.pop("by_code")
        counters.update({f"code_{code}": by_code[code] for code in (CODE_ALLOW, CODE_REJECT, CODE_DROP)})
        counters.update(name_cache_hits=self.names_seen.hits, name_cache_misses=self.names_seen.misses)
        counters.update(self.follower.stats)
        return counters


cdef inline int rank_of(const Work* work) noexcept nogil:
    if work.code != CODE_ALLOW:
        return RANK_BLOCK
    return RANK_MONITOR if work.action == ACTION_MONITOR else RANK_ALLOW


cdef inline void keep_decision(Work* work, const Work* request) noexcept nogil:
    """The stricter request's decision, name and path, into the packet's work."""
    work.kind = request.kind
    work.action = request.action
    work.code = request.code
    work.reason = request.reason
    work.list_id = request.list_id
    work.tier = request.tier
    work.order = request.order
    work.name_len = request.name_len
    memcpy(work.name, request.name, request.name_len + 1)
    work.path_len = request.path_len
    memcpy(work.path, request.path, request.path_len + 1)


cdef inline uint64_t flow_hash(const FlowId* flow) noexcept nogil:
    """The decided-flow table's hash of a flow."""
    return ef_hash_flow(<uint64_t>flow.ip_version | (<uint64_t>flow.protocol << 8) | (<uint64_t>flow.sport << 16) |
                        (<uint64_t>flow.dport << 32), flow.src, flow.dst)


cdef inline void fill_flow(FlowId* flow, const Packet* packet) noexcept nogil:
    # every byte is written (no padding), so no memset: flow_hash reads the fields back at
    # the widths they were written with, which keeps the loads from waiting on the stores
    flow.ip_version = packet.ip_version
    flow.protocol = packet.protocol
    flow.sport = packet.sport
    flow.dport = packet.dport
    memcpy(flow.src, packet.src, 16)
    memcpy(flow.dst, packet.dst, 16)


cdef int replace_name_set(NameSet* name_set, names) except -1:
    """Fill a new set with the names, then swap it in."""
    cdef list hashes = []
    cdef bytes raw
    cdef uint64_t hash
    cdef uint32_t size = 16, slot
    cdef uint64_t* slots
    for name in names:
        raw = name.encode("ascii") if isinstance(name, str) else bytes(name)
        hashes.append(ef_hash_bytes(PyBytes_AS_STRING(raw), len(raw)))
    while size < 2 * len(hashes):
        size <<= 1
    slots = <uint64_t*>calloc(size, sizeof(uint64_t))
    if slots == NULL:
        raise MemoryError()
    for hash in hashes:
        slot = hash & (size - 1)
        while slots[slot] != 0 and slots[slot] != hash:
            slot = (slot + 1) & (size - 1)
        slots[slot] = hash
    free(name_set.slots)
    name_set.slots = slots
    name_set.mask = size - 1
    return 0


cdef inline bint name_in_set(const NameSet* name_set, const char* name, int length) noexcept nogil:
    cdef uint64_t hash = ef_hash_bytes(name, length)
    cdef uint32_t slot = hash & name_set.mask
    while name_set.slots[slot] != 0:
        if name_set.slots[slot] == hash:
            return True
        slot = (slot + 1) & name_set.mask
    return False
