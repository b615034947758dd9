# QUIC v1/v2 client Initials read in the fast path (RFC 9000, RFC 9001, RFC 9369): the typed
# surface the NFQUEUE loop cimports, and the per-connection state it keeps.

from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

from edufilter._fastpath cimport FlowKey, NameResult, Packet
from edufilter.decode._libcrypto cimport EVP_CIPHER, EVP_CIPHER_CTX, EVP_MD, EVP_MD_CTX

cpdef enum QuicStatus:
    QUIC_NAME = 0          # a whole ClientHello with a server name (in the NameResult)
    QUIC_PENDING = 1       # a connection being read: more Initials to come
    QUIC_NO_NAME = 2       # a whole ClientHello without a usable name, or a CRYPTO stream that is none
    QUIC_UNREADABLE = 3    # no v1/v2 client Initial that decrypts, on a flow not being read

cdef enum:
    QUIC_MAX_CID = 20                  # RFC 9000 17.2
    QUIC_MAX_CRYPTO = 16384            # CRYPTO bytes kept per connection: a ClientHello is far smaller
    QUIC_MAX_CRYPTO_INTERVALS = 32     # holes in a CRYPTO stream; more is not a real client
    QUIC_MAX_FRAMES = 64               # CRYPTO frames in one Initial packet

cdef struct InitialKeys:
    uint8_t key[16]
    uint8_t iv[12]
    uint8_t hp[16]

# Received CRYPTO bytes of one connection: sorted, disjoint, non-adjacent intervals.
cdef struct CryptoStream:
    uint32_t interval_start[32]
    uint32_t interval_end[32]
    int interval_count
    uint8_t data[16384]

# A long-header packet's fields up to its packet number.
cdef struct LongHeader:
    Py_ssize_t start
    Py_ssize_t packet_number_offset
    Py_ssize_t end
    uint32_t version
    bint initial
    uint8_t dcid_length
    const uint8_t* dcid

cdef struct QuicFlow:
    uint64_t hash                      # 0 marks an empty slot
    FlowKey key
    double last_seen
    uint32_t version
    int64_t largest_packet_number
    uint8_t keys_dcid_length
    uint8_t keys_dcid[20]              # the Destination Connection ID the keys come from
    InitialKeys keys
    CryptoStream* crypto

cdef struct QuicCounters:
    uint64_t datagrams
    uint64_t initials
    uint64_t decrypted
    uint64_t decrypt_failures
    uint64_t malformed
    uint64_t small_datagrams
    uint64_t client_hellos
    uint64_t no_name
    uint64_t rekeyed
    uint64_t flows_tracked
    uint64_t flows_evicted
    uint64_t flows_expired
    uint64_t pool_full

cdef class QuicFlows:
    cdef QuicFlow* slots
    cdef uint32_t slot_mask
    cdef Py_ssize_t max_pending
    cdef Py_ssize_t pending
    cdef double timeout
    cdef double last_sweep
    cdef EVP_CIPHER* aes_gcm
    cdef EVP_CIPHER* aes_ecb
    cdef EVP_MD* sha256
    cdef EVP_CIPHER_CTX* packet_cipher
    cdef EVP_CIPHER_CTX* header_cipher
    cdef EVP_MD_CTX* digest
    cdef CryptoStream* staging         # the CRYPTO bytes of a connection not in the table yet
    cdef uint8_t* plain                # the decrypted payload of the current packet
    cdef Py_ssize_t plain_length
    cdef uint64_t frame_offset[64]
    cdef const uint8_t* frame_data[64]
    cdef uint32_t frame_length[64]
    cdef int frame_count
    cdef QuicCounters counters

    cdef void hmac_sha256(self, const uint8_t* key, Py_ssize_t key_length, const uint8_t* message,
                          Py_ssize_t message_length, uint8_t* out) noexcept nogil
    cdef void expand_label(self, const uint8_t* secret, const char* label, int label_length,
                           uint8_t* out, int out_length) noexcept nogil
    cdef void derive_keys(self, uint32_t version, const uint8_t* dcid, int dcid_length,
                          InitialKeys* keys) noexcept nogil
    cdef bint unprotect(self, const uint8_t* data, const LongHeader* header, const InitialKeys* keys,
                        int64_t largest, int64_t* packet_number) noexcept nogil
    cdef bint collect_crypto_frames(self) noexcept nogil
    cdef bint store_crypto(self, CryptoStream* stream) noexcept nogil
    cdef QuicStatus client_hello(self, CryptoStream* stream, NameResult* result) noexcept nogil
    cdef void release(self, QuicFlow* flow) noexcept nogil
    cdef QuicFlow* lookup(self, const FlowKey* key, uint64_t hash, double now) noexcept nogil
    cdef void sweep(self, double now) noexcept nogil
    cdef QuicFlow* claim(self, const FlowKey* key, uint64_t hash, double now) noexcept nogil
    cdef QuicStatus feed(self, const Packet* packet, double now, NameResult* result) noexcept nogil
    cdef void forget(self, const Packet* packet) noexcept nogil
