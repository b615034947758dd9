# The typed surface of the classify stage: the compiled domain table, read in place
# from a mapped image, for cimport by the queue loop.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

cdef enum:
    MEMBER_EXACT = 0x8000        # a set member that matches the full name only
    MEMBER_LIST_MASK = 0x7FFF
    MAX_LABELS = 128

# One bucket: where its entries and their name bytes start.
cdef packed struct Bucket:
    uint32_t entry_start
    uint32_t blob_start

# One name: a 16-bit hash fingerprint, the stored name's length and TLD code, its set.
cdef packed struct Entry:
    uint16_t fingerprint
    uint8_t stored_length
    uint8_t tld_code             # 0: the whole name is stored; else the TLD is implied
    uint16_t set_id

cdef struct TableView:
    uint32_t bucket_count
    uint32_t entry_count
    uint32_t set_count
    uint32_t tld_count
    uint64_t seed
    uint32_t fingerprint_mask
    const Bucket* buckets
    const Entry* entries
    const uint8_t* blob
    const uint32_t* set_offsets
    const uint16_t* set_members
    const uint32_t* tld_offsets  # TLD code c (1-based) spans tld_bytes[offsets[c-1]:offsets[c]]
    const uint8_t* tld_bytes
    uint8_t* tld_slots           # open-addressed TLD hash -> code, built when the view is made
    uint32_t tld_slot_mask

cdef int table_find(const TableView* table, const uint8_t* name, int length) noexcept nogil
cdef int name_suffixes(const uint8_t* name, int length, int* starts) noexcept nogil
