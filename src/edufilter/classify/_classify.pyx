# cython: language_level=3
"""The classify stage's hot half: a compiled domain-suffix table, built once by the
control path and read in place (from an mmap) by every worker.

Layout: names are hashed (64-bit, seeded) and sorted by hash; bucket b holds the names
whose hash falls in the b-th slice of the hash space (about 8 names). Per name the table
keeps a 32-bit key (16-bit fingerprint, the stored name's length, a TLD code), scanned four
at a time with SIMD, and a set id; the name bytes themselves (6 bits a character, without a
common TLD, which the code implies) are kept for the exact check, so no hash collision can
ever match the wrong name. About 22 bytes per name.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM
from cpython.object cimport PyObject
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, qsort, realloc
from libc.string cimport memchr, memcmp, memcpy, memset

from edufilter._fastpath cimport normalise_name_into

cdef extern from "_hash.h":
    uint64_t ef_hash_seeded(const void* data, size_t n, uint64_t seed) nogil

cdef extern from "_lines.h":
    void* ef_calloc_lines(size_t count, size_t size) nogil

cdef extern from *:
    """
    #define EF_PREFETCH(p) __builtin_prefetch((const void*)(p))
    #if defined(__SSE2__)
    #include <emmintrin.h>
    #endif
    /* Index of the first of keys[from..count) equal to key, or -1. The key array is padded
       so that a 16-byte load at any index below count stays inside the section. */
    static inline int ef_find_key(const uint32_t* keys, uint32_t from, uint32_t count, uint32_t key) {
    #if defined(__SSE2__)
        __m128i wanted = _mm_set1_epi32((int)key);
        for (; from < count; from += 4) {
            __m128i four = _mm_loadu_si128((const __m128i*)(keys + from));
            int hits = _mm_movemask_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(four, wanted)));
            if (count - from < 4)
                hits &= (1 << (count - from)) - 1;
            if (hits)
                return (int)(from + __builtin_ctz(hits));
        }
    #else
        for (; from < count; from++)
            if (keys[from] == key)
                return (int)from;
    #endif
        return -1;
    }
    /* memcmp(a, b, n) == 0 for the few dozen bytes of a packed name, inline: a libc call
       per lookup costs more than the comparison. */
    static inline int ef_same_bytes(const uint8_t* a, const uint8_t* b, uint32_t n) {
        uint64_t x, y;
        for (; n >= 8; n -= 8, a += 8, b += 8) {
            memcpy(&x, a, 8);
            memcpy(&y, b, 8);
            if (x != y)
                return 0;
        }
        for (; n; n--, a++, b++)
            if (*a != *b)
                return 0;
        return 1;
    }
    /* Whether a filter block has all eight bits of a key: the eight words at once (GCC
       vector extensions: SSE2 on x86-64, NEON on arm64). */
    typedef uint32_t ef_v8u __attribute__((vector_size(32)));
    static inline int ef_filter_has(const uint32_t* block, uint32_t hash, const uint32_t* salts) {
        ef_v8u words, multipliers, bits;
        memcpy(&words, block, sizeof words);
        memcpy(&multipliers, salts, sizeof multipliers);
        bits = ((ef_v8u){1, 1, 1, 1, 1, 1, 1, 1}) << ((hash * multipliers) >> 27);
        bits = (words & bits) ^ bits;
        uint64_t lanes[4];
        memcpy(lanes, &bits, sizeof lanes);
        return (lanes[0] | lanes[1] | lanes[2] | lanes[3]) == 0;
    }
    /* memcmp(a, b, 4 or 16) <= 0 for big-endian addresses, as integer comparisons: the
       binary search of an address table makes one per step. */
    static inline int ef_address_at_most(const uint8_t* a, const uint8_t* b, uint32_t width) {
        uint64_t x, y;
        uint32_t u, v;
        if (width == 4) {
            memcpy(&u, a, 4);
            memcpy(&v, b, 4);
            return __builtin_bswap32(u) <= __builtin_bswap32(v);
        }
        memcpy(&x, a, 8);
        memcpy(&y, b, 8);
        if (x != y)
            return __builtin_bswap64(x) < __builtin_bswap64(y);
        memcpy(&x, a + 8, 8);
        memcpy(&y, b + 8, 8);
        return __builtin_bswap64(x) <= __builtin_bswap64(y);
    }
    /* Where the last and the second-to-last '.' of name[0..n) are (-1: none), scanning back
       eight bytes at a time: 0x80 marks each byte of the word that is a dot, exactly. */
    static inline void ef_last_two_dots(const uint8_t* name, int n, int* last, int* second) {
        int end = n, i;
        *last = -1;
        *second = -1;
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        for (; end >= 8; end -= 8) {
            uint64_t word, other, marks;
            memcpy(&word, name + end - 8, 8);
            other = word ^ 0x2E2E2E2E2E2E2E2EULL;
            marks = ~(((other & 0x7F7F7F7F7F7F7F7FULL) + 0x7F7F7F7F7F7F7F7FULL) | other | 0x7F7F7F7F7F7F7F7FULL);
            while (marks) {
                int top = 63 - __builtin_clzll(marks);
                int position = end - 8 + (top >> 3);
                if (*last < 0) {
                    *last = position;
                } else {
                    *second = position;
                    return;
                }
                marks &= ~(1ULL << top);
            }
        }
    #endif
        for (i = end - 1; i >= 0; i--) {
            if (name[i] == '.') {
                if (*last < 0) {
                    *last = i;
                } else {
                    *second = i;
                    return;
                }
            }
        }
    }
    /* The name cache's hash and comparison, for names of 1 to 48 bytes. A name of 8 bytes
       or more is read as six 8-byte words at offsets min(8i, n - 8): overlapping, never past
       the name, and as many loads whatever its length, so neither the hash nor the
       comparison branches on the length (a mispredicted loop exit per name costs more than
       the redundant loads). Shorter names: two overlapping 4-byte loads, or three bytes. */
    static inline uint64_t ef_cache_word(const uint8_t* name, int n, int i) {
        uint64_t w;
        int offset = 8 * i < n - 8 ? 8 * i : n - 8;
        memcpy(&w, name + offset, 8);
        return w;
    }
    static inline uint64_t ef_cache_short(const uint8_t* name, int n) {
        uint32_t x, y;
        if (n >= 4) {
            memcpy(&x, name, 4);
            memcpy(&y, name + n - 4, 4);
            return ((uint64_t)x << 32) | y;
        }
        return ((uint64_t)name[0] << 16) | ((uint64_t)name[n >> 1] << 8) | name[n - 1];
    }
    static inline uint64_t ef_cache_hash(const uint8_t* name, int n, uint64_t seed) {
        uint64_t a = seed ^ ((uint64_t)n * 0x9E3779B97F4A7C15ULL), b = 0xD6E8FEB86659FD93ULL, h;
        int i;
        if (n >= 8) {
            for (i = 0; i < 6; i += 2) {
                a = (a ^ ef_cache_word(name, n, i)) * 0xBF58476D1CE4E5B9ULL;
                b = (b ^ ef_cache_word(name, n, i + 1)) * 0x94D049BB133111EBULL;
                a ^= a >> 29;
                b ^= b >> 31;
            }
        } else {
            a = (a ^ ef_cache_short(name, n)) * 0xBF58476D1CE4E5B9ULL;
        }
        h = (a ^ (b << 23) ^ (b >> 41)) * 0x94D049BB133111EBULL;
        h ^= h >> 32;
        return h ? h : 1;
    }
    static inline int ef_cache_same(const uint8_t* a, const uint8_t* b, int n) {
        uint64_t differ = 0;
        int i;
        if (n < 8)
            return ef_cache_short(a, n) == ef_cache_short(b, n);
        for (i = 0; i < 6; i++)
            differ |= ef_cache_word(a, n, i) ^ ef_cache_word(b, n, i);
        return differ == 0;
    }
    """
    uint64_t ef_cache_hash(const uint8_t* name, int n, uint64_t seed) nogil
    bint ef_cache_same(const uint8_t* a, const uint8_t* b, int n) nogil
    void ef_last_two_dots(const uint8_t* name, int n, int* last, int* second) nogil
    void EF_PREFETCH(const void* p) nogil
    bint ef_address_at_most(const uint8_t* a, const uint8_t* b, uint32_t width) nogil
    int ef_find_key(const uint32_t* keys, uint32_t start, uint32_t count, uint32_t key) nogil
    bint ef_same_bytes(const uint8_t* a, const uint8_t* b, uint32_t n) nogil
    bint ef_filter_has(const uint32_t* block, uint32_t hash, const uint32_t* salts) nogil

cdef enum:
    KEY_PADDING = 4               # keys after the last, so the SIMD scan never reads past them

cdef enum:
    HEADER_WORDS = 20
    FILTER_WORDS = 8              # a filter block: 8 x 32 bits, one bit set per word per key
    FILTER_BITS_PER_NAME = 6      # ~5 % false positives: a false positive only costs the full lookup

cdef enum:
    INDEX_ENTRIES_PER_CHECKPOINT = 1 << 20

cdef uint64_t FILTER_SEED = 0x5EEDF11735EEDF11
cdef uint32_t FILTER_SALTS[8]
FILTER_SALTS[:] = [0x47B6137B, 0x44974D91, 0x8824AD5B, 0xA2B7289D, 0x705495C7, 0x2DF1424B, 0x9EFC4947, 0x5C6BFB31]

SECTION_MAGIC = 0x3142544D4F444645   # b"EFDOMTB1" little-endian
cdef uint64_t MAGIC = SECTION_MAGIC


class HashCollision(Exception):
    """Two different names share a 64-bit hash under this seed; compile again with another."""


class TableFormatError(ValueError):
    """A domain-table section that is truncated or inconsistent."""


cdef inline uint32_t bucket_of(uint64_t hash, uint32_t bucket_count) noexcept nogil:
    # Monotonic in the hash, so sorting names by hash also sorts them by bucket.
    return <uint32_t>(((hash >> 32) * <uint64_t>bucket_count) >> 32)


cdef inline size_t align8(size_t n) noexcept nogil:
    return (n + 7) & ~(<size_t>7)


cdef inline uint32_t entry_key(uint64_t hash, uint32_t fingerprint_mask, uint32_t stored_length,
                               uint32_t tld_code) noexcept nogil:
    return <uint32_t>(hash & fingerprint_mask) | (stored_length << 16) | (tld_code << 24)


cdef inline uint32_t key_stored_length(uint32_t key) noexcept nogil:
    return (key >> 16) & 0xFF


# ---------------------------------------------------------------- the zone filter
# Every suffix of a name with two labels or more ends in the name's last two labels, its
# "zone" (example.org for www.docs.example.org). A small split-block Bloom filter over the
# zones of all listed names answers most misses with one cache line instead of a probe per
# suffix (bare TLDs excepted: when the table lists one, the filter is not consulted).

cdef inline int zone_start(const uint8_t* name, int length) noexcept nogil:
    """Where the name's last two labels start, or -1 for a single label."""
    cdef int last, second
    ef_last_two_dots(name, length, &last, &second)
    return second + 1 if second >= 0 else (0 if last >= 0 else -1)


cdef inline uint64_t zone_hash(const uint8_t* name, int length, int start) noexcept nogil:
    return ef_hash_seeded(name + start, length - start, FILTER_SEED)


cdef inline const uint32_t* filter_block(const TableView* table, uint64_t hash) noexcept nogil:
    return table.filter + (((hash >> 32) * <uint64_t>table.filter_blocks) >> 32) * FILTER_WORDS


cdef inline bint filter_has(const uint32_t* block, uint64_t hash) noexcept nogil:
    return ef_filter_has(block, <uint32_t>hash, FILTER_SALTS)


cdef inline void filter_add(uint32_t* block, uint64_t hash) noexcept nogil:
    cdef uint32_t low = <uint32_t>hash
    cdef int i
    for i in range(FILTER_WORDS):
        block[i] |= <uint32_t>1 << ((low * FILTER_SALTS[i]) >> 27)


cdef inline bint maybe_listed(const TableView* table, const uint8_t* name, int length) noexcept nogil:
    """False when no suffix of the name can be in the table (the zone filter says so)."""
    cdef int start
    if table.entry_count == 0:
        return False
    if table.filter_blocks == 0 or table.single_labels:
        return True
    start = zone_start(name, length)
    return start < 0 or filter_has(filter_block(table, zone_hash(name, length, start)), zone_hash(name, length, start))


# ---------------------------------------------------------------- 6-bit names
# Host names use 39 symbols ([a-z0-9-_.]), so each is stored in 6 bits: a quarter less.

cdef uint8_t SYMBOL[256]
cdef int _symbol
for _symbol in range(26):
    SYMBOL[ord("a") + _symbol] = 1 + _symbol
for _symbol in range(10):
    SYMBOL[ord("0") + _symbol] = 27 + _symbol
SYMBOL[ord("-")] = 37
SYMBOL[ord("_")] = 38
SYMBOL[ord(".")] = 39


cdef inline uint32_t packed_length(uint32_t characters) noexcept nogil:
    return (characters * 6 + 7) >> 3


cdef inline void pack_name(const uint8_t* name, int length, uint8_t* out) noexcept nogil:
    """Packs a normalised name into 6-bit symbols, most significant bits first."""
    cdef uint32_t bits = 0, pending = 0
    cdef int i
    cdef uint8_t* p = out
    for i in range(length):
        bits = (bits << 6) | SYMBOL[name[i]]
        pending += 6
        if pending >= 8:
            pending -= 8
            p[0] = <uint8_t>(bits >> pending)
            p += 1
    if pending:
        p[0] = <uint8_t>(bits << (8 - pending))


# ---------------------------------------------------------------- TLD codes

cdef uint8_t* build_tld_slots(const uint32_t* offsets, const uint8_t* tld_bytes, uint32_t count,
                              uint32_t* mask_out) noexcept nogil:
    """Open-addressed map from a TLD's hash to its code (1-based); NULL when out of memory."""
    cdef uint32_t size = 16, mask, slot, code
    cdef uint8_t* slots
    while size < count * 4:
        size <<= 1
    mask = size - 1
    slots = <uint8_t*>calloc(size, 1)
    if slots == NULL:
        return NULL
    for code in range(1, count + 1):
        slot = <uint32_t>ef_hash_seeded(tld_bytes + offsets[code - 1], offsets[code] - offsets[code - 1], 0) & mask
        while slots[slot]:
            slot = (slot + 1) & mask
        slots[slot] = <uint8_t>code
    mask_out[0] = mask
    return slots


cdef inline uint8_t tld_code_of(const TableView* table, const uint8_t* name, int length,
                                int* tld_length) noexcept nogil:
    """The code of the name's TLD, 0 when it has none in the table (then the whole name is stored)."""
    cdef int last, second
    ef_last_two_dots(name, length, &last, &second)
    return tld_code_after(table, name, length, last, tld_length)


cdef inline uint8_t tld_code_after(const TableView* table, const uint8_t* name, int length, int dot,
                                   int* tld_length) noexcept nogil:
    """tld_code_of for a name whose last dot is known to be at dot (-1: none)."""
    cdef uint32_t slot
    cdef uint8_t code
    cdef const uint8_t* tld
    cdef int n
    if dot < 0 or table.tld_count == 0:
        return 0
    tld = name + dot + 1
    n = length - dot - 1
    slot = <uint32_t>ef_hash_seeded(tld, n, 0) & table.tld_slot_mask
    while True:
        code = table.tld_slots[slot]
        if code == 0:
            return 0
        if <int>(table.tld_offsets[code] - table.tld_offsets[code - 1]) == n and \
                ef_same_bytes(table.tld_bytes + table.tld_offsets[code - 1], tld, n):
            tld_length[0] = n
            return code
        slot = (slot + 1) & table.tld_slot_mask


# ---------------------------------------------------------------- lookup

cdef inline uint32_t blob_offset(const TableView* table, uint32_t bucket, uint32_t entry) noexcept nogil:
    """Where an entry's name bytes start: its bucket's start plus the names before it."""
    cdef uint32_t offset = table.buckets[bucket].blob_start
    cdef uint32_t i
    for i in range(table.buckets[bucket].entry_start, entry):
        offset += packed_length(key_stored_length(table.keys[i]))
    return offset


cdef inline int find_coded(const TableView* table, const uint8_t* name, int length, uint8_t code,
                           int stored_length) noexcept nogil:
    cdef uint64_t hash = ef_hash_seeded(name, length, table.seed)
    cdef uint32_t bucket = bucket_of(hash, table.bucket_count)
    cdef uint32_t end = table.buckets[bucket + 1].entry_start
    cdef uint32_t key = entry_key(hash, table.fingerprint_mask, stored_length, code)
    cdef int i = ef_find_key(table.keys, table.buckets[bucket].entry_start, end, key)
    cdef uint8_t packed[192]
    if i < 0:
        return -1
    pack_name(name, stored_length, packed)
    while i >= 0:
        if ef_same_bytes(table.blob + blob_offset(table, bucket, i), packed, packed_length(stored_length)):
            return table.set_ids[i]
        i = ef_find_key(table.keys, i + 1, end, key)
    return -1


cdef int table_find(const TableView* table, const uint8_t* name, int length) noexcept nogil:
    """The set id of exactly this (normalised) name, or -1."""
    cdef int tld_length = 0
    cdef uint8_t code = tld_code_of(table, name, length, &tld_length)
    return find_coded(table, name, length, code, length - tld_length - 1 if code else length)


cdef int name_suffixes(const uint8_t* name, int length, int* starts) noexcept nogil:
    """Start offsets of the name and each parent domain, most specific first."""
    cdef int count = 1, i
    starts[0] = 0
    for i in range(length):
        if name[i] == b'.' and count < MAX_LABELS:
            starts[count] = i + 1
            count += 1
    return count


cdef inline int probed_suffixes(const TableView* table, int count) noexcept nogil:
    """How many suffixes are worth probing: a bare TLD only when the table lists one."""
    return count if table.single_labels or count == 1 else count - 1


cdef int suffix_sets(const TableView* table, const uint8_t* name, int length,
                     int* starts, int* set_ids) noexcept nogil:
    """Set id (or -1) of every suffix of the name, most specific first; returns the count."""
    cdef int count = name_suffixes(name, length, starts)
    cdef int probed = probed_suffixes(table, count) if maybe_listed(table, name, length) else 0
    cdef int tld_length = 0, i, suffix_length
    cdef uint8_t code = tld_code_of(table, name, length, &tld_length) if probed else 0
    cdef uint64_t hash
    for i in range(probed):
        # warm the buckets of every suffix before walking any of them
        hash = ef_hash_seeded(name + starts[i], length - starts[i], table.seed)
        EF_PREFETCH(&table.buckets[bucket_of(hash, table.bucket_count)])
    for i in range(count):
        suffix_length = length - starts[i]
        if i >= probed:
            set_ids[i] = -1
        elif code and suffix_length > tld_length:
            set_ids[i] = find_coded(table, name + starts[i], suffix_length, code, suffix_length - tld_length - 1)
        else:
            set_ids[i] = find_coded(table, name + starts[i], suffix_length, 0, suffix_length)
    return count


# ---------------------------------------------------------------- the name cache
# Traffic asks for the same few thousand names over and over (DNS query popularity follows
# Zipf's law): a worker remembers what the tables said about the names it saw last. An
# entry is keyed by the whole name and checked byte for byte, as the table is, so a popular
# name costs one hash and one cache line instead of the zone filter and a probe per suffix.
# Each cache belongs to one thread of one process and to one policy: its owner clears it
# when its tables change. Two entries per set, the newer first; the older one is evicted.
# A name of 49 to CACHED_LONG_NAME_BYTES bytes takes both: its bytes run on from the first
# entry's name into the second entry's line.

cdef uint64_t CACHE_SEED = 0xCAC4EDA7A5EED001
cdef size_t LONG_NAME_OFFSET = offsetof_name()


cdef size_t offsetof_name() noexcept nogil:
    cdef CachedName entry
    return <size_t>(<uint8_t*>entry.name - <uint8_t*>&entry)


cdef int name_cache_init(NameCache* cache, uint32_t names) noexcept nogil:
    """Room for about `names` names (a power of two, at least 2); -1 when out of memory."""
    cdef uint32_t sets = 1
    while sets * 2 < names and sets < (<uint32_t>1 << 30):
        sets <<= 1
    cache.entries = <CachedName*>ef_calloc_lines(sets * 2, sizeof(CachedName))
    cache.set_mask = sets - 1
    cache.hits = cache.misses = 0
    cache.empty = True
    return 0 if cache.entries != NULL else -1


cdef void name_cache_free(NameCache* cache) noexcept nogil:
    free(cache.entries)
    cache.entries = NULL


cdef void name_cache_clear(NameCache* cache) noexcept nogil:
    # an empty cache is left alone: 4 MB of zeros would push the tables out of the CPU's caches
    if cache.entries != NULL and not cache.empty:
        memset(cache.entries, 0, (<size_t>cache.set_mask + 1) * 2 * sizeof(CachedName))
        cache.empty = True


cdef inline uint64_t cache_hash(const uint8_t* name, int length) noexcept nogil:
    """The hash a name is cached under; 0 (never a cached hash) for a name too long to cache."""
    if 0 < length <= CACHED_NAME_BYTES:
        return ef_cache_hash(name, length, CACHE_SEED)
    if CACHED_NAME_BYTES < length <= CACHED_LONG_NAME_BYTES:
        return ef_hash_seeded(name, length, CACHE_SEED)
    return 0


cdef inline CachedName* cache_set(const NameCache* cache, uint64_t hash) noexcept nogil:
    return cache.entries + ((hash >> 32) & cache.set_mask) * 2


cdef inline void cache_prefetch(const NameCache* cache, uint64_t hash) noexcept nogil:
    cdef const CachedName* entries = cache_set(cache, hash)
    EF_PREFETCH(&entries[0])
    EF_PREFETCH(&entries[1])


cdef void name_cache_prefetch(const NameCache* cache, const uint8_t* name, int length) noexcept nogil:
    """Starts loading the name's set, for a lookup a little later: a worker's first lookup of
    a name otherwise waits for a line of its cache's 4 MB."""
    cdef uint64_t hash = cache_hash(name, length)
    if hash != 0:
        cache_prefetch(cache, hash)


cdef inline bint holds(const CachedName* entry, uint64_t hash, const uint8_t* name, int length) noexcept nogil:
    return entry.hash == hash and entry.length == length and ef_cache_same(entry.name, name, length)


cdef inline bint holds_long(const CachedName* entries, uint64_t hash, const uint8_t* name, int length) noexcept nogil:
    """Whether the set's two entries hold this long name (its bytes from the first entry's name on)."""
    return entries[0].hash == hash and entries[0].length == length and \
        ef_same_bytes(<const uint8_t*>entries + LONG_NAME_OFFSET, name, length)


cdef inline const CachedName* cache_find(const NameCache* cache, uint64_t hash, const uint8_t* name,
                                         int length) noexcept nogil:
    """The entry of exactly this name, or NULL."""
    cdef const CachedName* entries = cache_set(cache, hash)
    # the way whose hash matches (two names of one set never share a 64-bit hash in practice,
    # and if they did the byte check below would only miss): one branch, not one per way;
    # the newer first, so a popular name's lookup does not touch the second line
    cdef const CachedName* entry = &entries[0] if entries[0].hash == hash else &entries[1]
    if length > CACHED_NAME_BYTES:
        return entries if hash != 0 and holds_long(entries, hash, name, length) else NULL
    if hash != 0 and holds(entry, hash, name, length):
        return entry
    return NULL


cdef CachedName* cache_store(NameCache* cache, uint64_t hash, const uint8_t* name, int length) noexcept nogil:
    """A new entry for the name, its value for the caller to fill; NULL when the name is too long."""
    cdef CachedName* entries = cache_set(cache, hash)
    cdef bint long_name = length > CACHED_NAME_BYTES
    if hash == 0 or not 0 < length <= CACHED_LONG_NAME_BYTES:
        return NULL
    if holds_long(entries, hash, name, length) if long_name else holds(&entries[0], hash, name, length):
        return &entries[0]
    cache.empty = False
    if long_name or entries[0].length > CACHED_NAME_BYTES:
        entries[1].hash = 0    # both lines become the long name's, or cease to be
    else:
        entries[1] = entries[0]
    entries[0].hash = hash
    entries[0].length = <uint8_t>length
    memset(entries[0].value, 0, CACHED_VALUE_BYTES)
    memcpy(<uint8_t*>entries + LONG_NAME_OFFSET, name, length)
    return &entries[0]


cdef class DomainTable:
    """A read-only view of one domain-table section (e.g. a slice of a mapped image)."""

    def __cinit__(self, section):
        cdef const uint8_t[::1] data = section
        cdef const uint64_t* header
        cdef size_t length = data.shape[0]
        self.section = section
        memset(&self.view, 0, sizeof(TableView))
        self.batch_names.entries = NULL
        self.batch_call = 0
        if length < HEADER_WORDS * 8:
            raise TableFormatError("domain table: section shorter than its header")
        header = <const uint64_t*>&data[0]
        if header[0] != MAGIC:
            raise TableFormatError("domain table: bad magic")
        if header[16] != length:
            raise TableFormatError(f"domain table: section is {length} bytes, header says {header[16]}")
        if header[19] >= (1 << 31):
            raise TableFormatError("domain table: zone filter size out of range")
        if header[1] == 0 or header[1] >= (1 << 31) or header[2] >= (1 << 31) or header[3] > 65536 \
                or header[4] > 255 or header[6] > 0xFFFF:
            raise TableFormatError("domain table: counts out of range")
        self.view.bucket_count = <uint32_t>header[1]
        self.view.entry_count = <uint32_t>header[2]
        self.view.set_count = <uint32_t>header[3]
        self.view.tld_count = <uint32_t>header[4]
        self.view.seed = header[5]
        self.view.fingerprint_mask = <uint32_t>header[6]
        self.view.single_labels = <uint32_t>min(header[17], 0xFFFFFFFF)
        self.check_region(header[7], (self.view.bucket_count + 1) * sizeof(Bucket), length, "buckets")
        self.check_region(header[8], (self.view.entry_count + KEY_PADDING) * 4, length, "keys")
        self.check_region(header[9], self.view.entry_count * 2, length, "set ids")
        self.check_region(header[10], (self.view.tld_count + 1) * 4, length, "TLD offsets")
        self.check_region(header[12], (self.view.set_count + 1) * 4, length, "set offsets")
        self.check_region(header[14], header[15], length, "names")
        self.view.buckets = <const Bucket*>(&data[0] + header[7])
        self.view.keys = <const uint32_t*>(&data[0] + header[8])
        self.view.set_ids = <const uint16_t*>(&data[0] + header[9])
        self.view.tld_offsets = <const uint32_t*>(&data[0] + header[10])
        self.check_region(header[11], self.view.tld_offsets[self.view.tld_count], length, "TLD names")
        self.view.tld_bytes = &data[0] + header[11]
        self.view.set_offsets = <const uint32_t*>(&data[0] + header[12])
        self.check_region(header[13], self.view.set_offsets[self.view.set_count] * 2, length, "set members")
        self.view.set_members = <const uint16_t*>(&data[0] + header[13])
        self.view.blob = &data[0] + header[14]
        self.check_region(header[18], header[19] * FILTER_WORDS * 4, length, "zone filter")
        self.view.filter = <const uint32_t*>(&data[0] + header[18])
        self.view.filter_blocks = <uint32_t>header[19]
        self.validate(header[15])
        self.view.tld_slots = build_tld_slots(self.view.tld_offsets, self.view.tld_bytes,
                                              self.view.tld_count, &self.view.tld_slot_mask)
        if self.view.tld_slots == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.view.tld_slots)
        name_cache_free(&self.batch_names)

    cdef check_region(self, uint64_t offset, uint64_t size, size_t length, str what):
        if offset % 4 or offset > length or size > length - offset:
            raise TableFormatError(f"domain table: {what} lie outside the section")

    cdef validate(self, uint64_t blob_length):
        """Every offset the lookup follows stays inside the section."""
        cdef uint32_t b, i
        cdef uint64_t blob = 0
        cdef const TableView* t = &self.view
        if t.buckets[0].entry_start != 0 or t.buckets[0].blob_start != 0:
            raise TableFormatError("domain table: first bucket does not start at 0")
        for b in range(t.bucket_count):
            if t.buckets[b + 1].entry_start < t.buckets[b].entry_start:
                raise TableFormatError(f"domain table: bucket {b} ends before it starts")
            for i in range(t.buckets[b].entry_start, min(t.buckets[b + 1].entry_start, t.entry_count)):
                blob += packed_length(key_stored_length(t.keys[i]))
                if t.set_ids[i] >= t.set_count or (t.keys[i] >> 24) > t.tld_count:
                    raise TableFormatError(f"domain table: entry {i} refers past the set or TLD table")
            if t.buckets[b + 1].blob_start != blob:
                raise TableFormatError(f"domain table: bucket {b} names do not add up")
        if t.buckets[t.bucket_count].entry_start != t.entry_count or blob != blob_length:
            raise TableFormatError("domain table: entries and names do not add up")
        for i in range(t.tld_count):
            if t.tld_offsets[i + 1] < t.tld_offsets[i]:
                raise TableFormatError("domain table: TLD offsets out of order")
        for i in range(t.set_count):
            if t.set_offsets[i + 1] < t.set_offsets[i]:
                raise TableFormatError("domain table: set offsets out of order")

    @property
    def entry_count(self) -> int:
        return self.view.entry_count

    @property
    def bucket_count(self) -> int:
        return self.view.bucket_count

    @property
    def seed(self) -> int:
        return self.view.seed

    def find(self, bytes name):
        """Set id of exactly this normalised name (no parent domains), or None."""
        cdef int found = table_find(&self.view, <const uint8_t*>PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name)) \
            if 0 < PyBytes_GET_SIZE(name) <= 253 else -1
        return None if found < 0 else found

    def matches(self, bytes name):
        """(suffix start offset, set id) for each listed suffix of the name, most specific first."""
        cdef int starts[MAX_LABELS]
        cdef int set_ids[MAX_LABELS]
        cdef int count, i
        if not 0 < PyBytes_GET_SIZE(name) <= 253:
            return []
        count = suffix_sets(&self.view, <const uint8_t*>PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name),
                            starts, set_ids)
        return [(starts[i], set_ids[i]) for i in range(count) if set_ids[i] >= 0]

    def set_members(self, int set_id):
        """(list id, exact only) for each member of a set."""
        if not 0 <= set_id < self.view.set_count:
            raise IndexError(set_id)
        return [(self.view.set_members[i] & MEMBER_LIST_MASK, bool(self.view.set_members[i] & MEMBER_EXACT))
                for i in range(self.view.set_offsets[set_id], self.view.set_offsets[set_id + 1])]

    def count_listed(self, list names):
        """How many of the (normalised, bytes) names have a listed suffix: the batch lookup.

        A name seen before in the same call is answered from a name cache, as a worker
        answers a popular name; the cache is kept between calls (made once, BATCH_CACHE_NAMES
        names), its entries marked with the call that wrote them, so each call starts as if
        it were empty without writing it all. The other names are looked up BATCH at a time
        with their probes interleaved, so the cache misses of one name's buckets overlap with
        the others'. The GIL is held throughout: the names are read in place from the list."""
        cdef Probe* probes
        cdef const uint8_t* pointers[BATCH]
        cdef int lengths[BATCH]
        cdef uint64_t hashes[BATCH]
        cdef LookupQueue queue
        cdef Py_ssize_t listed = 0, start, n = len(names)
        cdef int batch, j
        cdef const CachedName* entry
        cdef PyObject* name
        if self.batch_names.entries == NULL and name_cache_init(&self.batch_names, BATCH_CACHE_NAMES) < 0:
            raise MemoryError()
        if self.batch_call == 255:
            name_cache_clear(&self.batch_names)   # a mark is about to be used again
            self.batch_call = 0
        self.batch_call += 1
        probes = <Probe*>malloc(BATCH * MAX_LABELS * sizeof(Probe))
        if probes == NULL:
            raise MemoryError()
        queue.count = 0
        queue.call = self.batch_call
        try:
            for start in range(0, n, BATCH):
                batch = <int>min(BATCH, n - start)
                # the name objects two batches on: scattered over the allocator's pools by size
                for j in range(<int>min(BATCH, n - start - 2 * BATCH)):
                    name = PyList_GET_ITEM(names, start + 2 * BATCH + j)
                    EF_PREFETCH(name)
                    EF_PREFETCH(<const char*>name + 63)   # a name object often spans two lines
                for j in range(batch):
                    name = PyList_GET_ITEM(names, start + j)   # borrowed: no reference count written
                    if not PyBytes_CheckExact(<object>name):
                        raise TypeError("count_listed takes a list of bytes")
                    pointers[j] = <const uint8_t*>PyBytes_AS_STRING(<object>name)
                    lengths[j] = <int>PyBytes_GET_SIZE(<object>name)
                    if not 0 < lengths[j] <= 253:
                        lengths[j] = 0
                    hashes[j] = cache_hash(pointers[j], lengths[j])
                    cache_prefetch(&self.batch_names, hashes[j])
                for j in range(batch):
                    entry = cache_find(&self.batch_names, hashes[j], pointers[j], lengths[j])
                    if entry != NULL and entry.value[1] == queue.call:
                        listed += entry.value[0]
                    elif lengths[j]:
                        queue.pointers[queue.count] = pointers[j]
                        queue.lengths[queue.count] = lengths[j]
                        queue.hashes[queue.count] = hashes[j]
                        queue.count += 1
                        if queue.count == BATCH:
                            listed += look_up_queued(&self.view, &queue, probes, &self.batch_names)
            listed += look_up_queued(&self.view, &queue, probes, &self.batch_names)
        finally:
            free(probes)
        return listed


cdef enum:
    BATCH = 64
    BATCH_CACHE_NAMES = 131072     # count_listed's name cache: 8 MB

cdef struct Probe:
    const uint8_t* suffix
    int length
    int stored_length
    uint8_t code
    uint32_t key
    uint32_t bucket
    uint32_t candidate_offset      # blob offset of the first entry whose fingerprint matches
    int candidate_entry            # -1: no entry matches, the suffix is not listed
    int owner


cdef struct LookupQueue:
    # names the cache did not know, waiting for a full batch
    const uint8_t* pointers[BATCH]
    int lengths[BATCH]
    uint64_t hashes[BATCH]
    bint found[BATCH]
    int count
    uint8_t call               # the mark of this call's cache entries


cdef Py_ssize_t look_up_queued(const TableView* table, LookupQueue* queue, Probe* probes,
                               NameCache* cache) noexcept nogil:
    """Looks the queued names up in the table, caches what it found and empties the queue;
    returns how many were listed."""
    cdef Py_ssize_t listed = 0
    cdef CachedName* stored
    cdef int k
    find_batch(table, queue.pointers, queue.lengths, queue.count, probes, queue.found)
    for k in range(queue.count):
        listed += queue.found[k]
        stored = cache_store(cache, queue.hashes[k], queue.pointers[k], queue.lengths[k])
        if stored != NULL:
            stored.value[0] = queue.found[k]
            stored.value[1] = queue.call
    queue.count = 0
    return listed


cdef inline int parent_start(const uint8_t* name, int start) noexcept nogil:
    """Where the suffix one label longer than name[start:] starts, or -1 at the full name."""
    cdef int i = start - 2
    if start <= 0:
        return -1
    while i >= 0 and name[i] != b'.':
        i -= 1
    return i + 1


cdef void find_batch(const TableView* table, const uint8_t** names, const int* lengths, int count,
                     Probe* probes, bint* found) noexcept nogil:
    """found[i]: whether any suffix of names[i] is listed.

    Most misses end at the zone filter. The rest are probed in two rounds: the zone alone
    first (lists mostly hold registrable domains), then every longer suffix of the names
    still open. Each round runs in passes — hash and bucket, keys, name bytes of a
    fingerprint match, exact comparison — so the cache misses of all the batch's probes
    overlap instead of adding up. probes holds BATCH * MAX_LABELS.
    """
    cdef int next_start[BATCH]       # the suffix each name probes next; -1: done
    cdef uint8_t codes[BATCH]
    cdef int tld_lengths[BATCH]
    cdef int last_dots[BATCH]
    cdef uint64_t zones[BATCH]
    cdef int probe_count, i, j, second_dot, suffix_start, round_number = 0
    cdef uint64_t hash
    cdef Probe* probe
    cdef uint8_t packed[192]
    cdef bint filtered = table.filter_blocks != 0 and not table.single_labels
    for i in range(count):
        found[i] = False
        next_start[i] = -1
        if lengths[i] == 0:
            continue
        ef_last_two_dots(names[i], lengths[i], &last_dots[i], &second_dot)
        # The zone (the last two labels) first; a name of one label, or any name when the
        # table lists a bare TLD (then no zone filter either), from its last label.
        if table.single_labels or last_dots[i] < 0:
            next_start[i] = last_dots[i] + 1
        else:
            next_start[i] = second_dot + 1
        if filtered and next_start[i] >= 0:
            zones[i] = zone_hash(names[i], lengths[i], next_start[i])
            EF_PREFETCH(filter_block(table, zones[i]))
    for i in range(count):
        if filtered and next_start[i] >= 0 and not filter_has(filter_block(table, zones[i]), zones[i]):
            next_start[i] = -1
        if next_start[i] >= 0:
            tld_lengths[i] = 0
            codes[i] = tld_code_after(table, names[i], lengths[i], last_dots[i], &tld_lengths[i])
    while True:
        probe_count = 0
        for i in range(count):
            if next_start[i] < 0:
                continue
            # The zone alone in the first round; every longer suffix at once in the second.
            suffix_start = next_start[i]
            while suffix_start >= 0:
                probe = &probes[probe_count]
                probe.suffix = names[i] + suffix_start
                probe.length = lengths[i] - suffix_start
                if codes[i] and probe.length > tld_lengths[i]:
                    probe.code = codes[i]
                    probe.stored_length = probe.length - tld_lengths[i] - 1
                else:
                    probe.code = 0
                    probe.stored_length = probe.length
                hash = ef_hash_seeded(probe.suffix, probe.length, table.seed)
                probe.key = entry_key(hash, table.fingerprint_mask, probe.stored_length, probe.code)
                probe.bucket = bucket_of(hash, table.bucket_count)
                probe.owner = i
                EF_PREFETCH(&table.buckets[probe.bucket])
                probe_count += 1
                suffix_start = parent_start(names[i], suffix_start) if round_number else -1
            next_start[i] = parent_start(names[i], next_start[i]) if round_number == 0 else -1
        if probe_count == 0:
            return
        round_number += 1
        for j in range(probe_count):
            EF_PREFETCH(&table.keys[table.buckets[probes[j].bucket].entry_start])
        for j in range(probe_count):
            probe = &probes[j]
            probe.candidate_entry = ef_find_key(table.keys, table.buckets[probe.bucket].entry_start,
                                                table.buckets[probe.bucket + 1].entry_start, probe.key)
            if probe.candidate_entry >= 0:
                probe.candidate_offset = blob_offset(table, probe.bucket, probe.candidate_entry)
                EF_PREFETCH(table.blob + probe.candidate_offset)
        for j in range(probe_count):
            probe = &probes[j]
            i = probe.owner
            if probe.candidate_entry < 0 or found[i]:
                continue
            pack_name(probe.suffix, probe.stored_length, packed)
            if ef_same_bytes(table.blob + probe.candidate_offset, packed, packed_length(probe.stored_length)) or \
                    find_coded(table, probe.suffix, probe.length, probe.code, probe.stored_length) >= 0:
                # (find_coded: a 16-bit fingerprint collision inside the bucket; the exact lookup goes on)
                found[i] = True
                next_start[i] = -1


# ---------------------------------------------------------------- building

cdef packed struct Pending:
    uint64_t hash
    uint16_t member           # list id | MEMBER_EXACT; the set id once deduplicated
    uint8_t stored_length
    uint8_t tld_code


cdef inline const uint8_t* next_name(const uint8_t* p, const uint8_t* end, char* name, int* length) noexcept nogil:
    """The line at p, normalised into name: *length is -1 when it is not a valid host name and
    0 when the line is empty. Returns where the next line starts."""
    cdef const uint8_t* line_end = <const uint8_t*>memchr(p, b'\n', end - p)
    cdef int n
    if line_end == NULL:
        line_end = end
    n = <int>(line_end - p)
    if n and p[n - 1] == b'\r':
        n -= 1
    length[0] = 0 if n == 0 else (normalise_name_into(p, n, name) if n <= 254 else -1)
    return line_end + 1


cdef void sort_pending(Pending* items, size_t count) noexcept nogil:
    """Sort by hash, in place: glibc's qsort would allocate a second array as large as this one
    for its merge sort. One American-flag pass on the hash's top byte, then each of the 256
    buckets (small: their copy is small) with qsort."""
    cdef size_t counts[256]
    cdef size_t starts[257]
    cdef size_t cursor[256]
    cdef size_t i, bucket
    cdef uint32_t digit
    cdef Pending moving, swapped
    memset(counts, 0, sizeof(counts))
    for i in range(count):
        counts[items[i].hash >> 56] += 1
    starts[0] = 0
    for bucket in range(256):
        starts[bucket + 1] = starts[bucket] + counts[bucket]
        cursor[bucket] = starts[bucket]
    for bucket in range(256):
        while cursor[bucket] < starts[bucket + 1]:
            moving = items[cursor[bucket]]
            digit = <uint32_t>(moving.hash >> 56)
            while digit != bucket:
                # carry it to its bucket, taking the item there along the cycle
                swapped = items[cursor[digit]]
                items[cursor[digit]] = moving
                cursor[digit] += 1
                moving = swapped
                digit = <uint32_t>(moving.hash >> 56)
            items[cursor[bucket]] = moving
            cursor[bucket] += 1
    for bucket in range(256):
        qsort(items + starts[bucket], counts[bucket], sizeof(Pending), compare_pending)


cdef int compare_pending(const void* a, const void* b) noexcept nogil:
    cdef const Pending* x = <const Pending*>a
    cdef const Pending* y = <const Pending*>b
    if x.hash != y.hash:
        return -1 if x.hash < y.hash else 1
    return <int>x.member - <int>y.member


cdef class DomainTableBuilder:
    """Compiles lists of names into a domain-table section, streaming the lists twice so
    that memory stays near 12 bytes per name besides the output.

    add_source(list_id, exact, chunks): chunks() returns an iterable of bytes chunks of
    newline-separated names (called once per pass). prepare() returns the section size;
    write(buffer) fills a writable buffer of that size (e.g. an mmap of the image file).
    """

    cdef Pending* pending
    cdef size_t count
    cdef size_t capacity
    cdef TableView tlds            # only the TLD fields are used while building
    cdef bytes tld_blob
    cdef uint32_t* tld_offsets
    cdef uint64_t seed
    cdef uint32_t fingerprint_mask
    cdef double entries_per_bucket
    cdef size_t blob_bytes_per_pass
    cdef list sources
    cdef list sets
    cdef readonly Py_ssize_t invalid_names
    cdef readonly Py_ssize_t names_read
    cdef uint32_t bucket_count
    cdef size_t section_length
    cdef size_t blob_length
    cdef size_t member_count
    cdef size_t single_labels      # names that are a bare TLD: lookups probe those only when any exist
    cdef uint32_t filter_blocks
    cdef uint32_t* filter          # the section's zone filter, while write() runs
    cdef bint prepared

    def __cinit__(self, tlds=(), uint64_t seed=0, double entries_per_bucket=8.0,
                  uint32_t fingerprint_mask=0xFFFF, size_t blob_bytes_per_pass=16 << 20):
        cdef uint32_t i, offset = 0
        tld_list = [bytes(t) for t in tlds]
        if len(tld_list) > 255:
            raise ValueError("at most 255 TLD codes")
        if entries_per_bucket < 0.5 or fingerprint_mask > 0xFFFF:
            raise ValueError("entries_per_bucket must be >= 0.5 and the fingerprint 16 bits at most")
        self.tld_blob = b"".join(tld_list)
        self.tld_offsets = <uint32_t*>malloc((len(tld_list) + 1) * 4)
        if self.tld_offsets == NULL:
            raise MemoryError()
        self.tld_offsets[0] = 0
        for i in range(len(tld_list)):
            offset += len(tld_list[i])
            self.tld_offsets[i + 1] = offset
        memset(&self.tlds, 0, sizeof(TableView))
        self.tlds.tld_count = len(tld_list)
        self.tlds.tld_offsets = self.tld_offsets
        self.tlds.tld_bytes = <const uint8_t*>PyBytes_AS_STRING(self.tld_blob)
        self.tlds.tld_slots = build_tld_slots(self.tld_offsets, self.tlds.tld_bytes, self.tlds.tld_count,
                                              &self.tlds.tld_slot_mask)
        if self.tlds.tld_slots == NULL:
            raise MemoryError()
        self.seed = seed
        self.fingerprint_mask = fingerprint_mask
        self.entries_per_bucket = entries_per_bucket
        # Pass 2 places names a hash range at a time, each range's names about this many
        # bytes: the pages it writes (and the part of the pending array it reads) stay few, so
        # the compile's memory stays well below the image's size, and they fit in the cache.
        self.blob_bytes_per_pass = max(1, blob_bytes_per_pass)
        self.sources = []
        self.sets = []

    def __dealloc__(self):
        free(self.pending)
        free(self.tld_offsets)
        free(self.tlds.tld_slots)

    def add_source(self, int list_id, bint exact, chunks):
        if not 0 <= list_id <= MEMBER_LIST_MASK:
            raise ValueError(f"list id {list_id} out of range")
        if self.prepared:
            raise RuntimeError("add_source after prepare")
        self.sources.append(((list_id | (MEMBER_EXACT if exact else 0)), chunks))

    def reserve(self, Py_ssize_t names):
        """Room for this many names up front (e.g. the lists' counts): growing by copying
        would need the old and the new array at once, the compile's peak memory."""
        if names > <Py_ssize_t>self.capacity:
            self.resize(names)

    cdef bint grow(self) except False:
        return self.resize(self.capacity * 3 // 2 + 4096)

    cdef bint resize(self, size_t capacity) except False:
        cdef Pending* grown = <Pending*>realloc(self.pending, capacity * sizeof(Pending))
        if grown == NULL:
            raise MemoryError()
        self.pending = grown
        self.capacity = capacity
        return True

    cdef size_t collect(self, bytes chunk, uint16_t member) except? 0:
        """Pass 1 over one chunk: hash and measure every valid name."""
        cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(chunk)
        cdef const uint8_t* end = p + PyBytes_GET_SIZE(chunk)
        cdef char name[256]
        cdef int length, tld_length
        cdef uint8_t code
        cdef Pending* entry
        while p < end:
            p = next_name(p, end, name, &length)
            if length:
                self.names_read += 1
                if length < 0:
                    self.invalid_names += 1
                else:
                    if self.count == self.capacity:
                        self.grow()
                    tld_length = 0
                    code = tld_code_of(&self.tlds, <const uint8_t*>name, length, &tld_length)
                    entry = &self.pending[self.count]
                    entry.hash = ef_hash_seeded(name, length, self.seed)
                    entry.member = member
                    entry.tld_code = code
                    entry.stored_length = <uint8_t>(length - tld_length - 1 if code else length)
                    if memchr(name, b'.', length) == NULL:
                        self.single_labels += 1
                    self.count += 1
        return self.count

    def prepare(self):
        """Pass 1 over every source, then sort, merge duplicates into sets and size the section."""
        cdef size_t i, j, k = 0, m
        cdef dict set_ids = {}
        cdef uint16_t member
        if self.prepared:
            return self.section_length
        for member, chunks in self.sources:
            for chunk in chunks():
                self.collect(bytes(chunk), member)
        with nogil:
            sort_pending(self.pending, self.count)
        i = 0
        while i < self.count:
            j = i + 1
            while j < self.count and self.pending[j].hash == self.pending[i].hash:
                if self.pending[j].stored_length != self.pending[i].stored_length or \
                        self.pending[j].tld_code != self.pending[i].tld_code:
                    raise HashCollision(f"seed {self.seed}")
                j += 1
            members = []
            for m in range(i, j):
                if not members or members[len(members) - 1] != self.pending[m].member:
                    members.append(self.pending[m].member)
            key = tuple(members)
            set_id = set_ids.get(key)
            if set_id is None:
                set_id = set_ids[key] = len(self.sets)
                if set_id > 0xFFFF:
                    raise ValueError("more than 65,536 distinct list combinations")
                self.sets.append(key)
                self.member_count += len(key)
            self.pending[k] = self.pending[i]
            self.pending[k].member = <uint16_t>set_id
            self.blob_length += packed_length(self.pending[i].stored_length)
            k += 1
            i = j
        self.count = k
        self.bucket_count = max(1, <uint32_t>(k / self.entries_per_bucket + 0.5))
        self.filter_blocks = <uint32_t>((k * FILTER_BITS_PER_NAME + FILTER_WORDS * 32 - 1) // (FILTER_WORDS * 32))
        self.section_length = self.layout()[9]
        self.prepared = True
        return self.section_length

    cdef tuple layout(self):
        """Byte offsets of the regions: buckets, keys, set ids, TLD offsets, TLD names, set
        offsets, set members, names, zone filter, end."""
        cdef size_t offset = HEADER_WORDS * 8
        offsets = []
        for size in ((self.bucket_count + 1) * sizeof(Bucket), (self.count + KEY_PADDING) * 4, self.count * 2,
                     (self.tlds.tld_count + 1) * 4, len(self.tld_blob), (len(self.sets) + 1) * 4,
                     self.member_count * 2, self.blob_length, self.filter_blocks * FILTER_WORDS * 4):
            offsets.append(offset)
            offset = align8(offset + size)
        offsets.append(offset)
        return tuple(offsets)

    def write(self, out, checkpoint=None):
        """Fills out (writable, exactly prepare() bytes, zero-filled: a new bytearray or a freshly
        truncated file's map) with the section; pass 2 places the names, reading the sources
        once per hash range of about blob_bytes_per_pass of stored names. checkpoint(), when
        given, is called after each million index entries and after each range: the moment to
        drop the pages written so far (e.g. MADV_DONTNEED on a file map)."""
        cdef uint8_t[::1] buffer = out
        cdef uint8_t* base
        cdef uint64_t* header
        cdef Bucket* buckets
        cdef uint32_t* keys
        cdef uint16_t* set_ids
        cdef uint32_t* offsets32
        cdef uint16_t* members
        cdef uint8_t* blob
        cdef uint8_t* written
        cdef uint32_t bucket, next_bucket = 0
        cdef size_t i, blob_offset = 0, n, passes, range_number
        cdef uint64_t range_low, range_high
        cdef size_t regions[10]
        if not self.prepared:
            self.prepare()
        if buffer.shape[0] != self.section_length:
            raise ValueError(f"section buffer must be {self.section_length} bytes")
        base = &buffer[0]  # zero-filled by the caller: touching every page here would double the peak
        layout = self.layout()
        for i in range(10):
            regions[i] = layout[i]
        header = <uint64_t*>base
        for i, value in enumerate((MAGIC, self.bucket_count, self.count, len(self.sets), self.tlds.tld_count,
                                   self.seed, self.fingerprint_mask, *layout[:8], self.blob_length,
                                   self.section_length, self.single_labels, layout[8], self.filter_blocks)):
            header[i] = value
        buckets = <Bucket*>(base + regions[0])
        keys = <uint32_t*>(base + regions[1])
        set_ids = <uint16_t*>(base + regions[2])
        for i in range(self.count):
            bucket = bucket_of(self.pending[i].hash, self.bucket_count)
            while next_bucket <= bucket:
                buckets[next_bucket].entry_start = <uint32_t>i
                buckets[next_bucket].blob_start = <uint32_t>blob_offset
                next_bucket += 1
            keys[i] = entry_key(self.pending[i].hash, self.fingerprint_mask, self.pending[i].stored_length,
                                self.pending[i].tld_code)
            set_ids[i] = self.pending[i].member
            blob_offset += packed_length(self.pending[i].stored_length)
            if checkpoint is not None and i % INDEX_ENTRIES_PER_CHECKPOINT == INDEX_ENTRIES_PER_CHECKPOINT - 1:
                checkpoint()
        while next_bucket <= self.bucket_count:
            buckets[next_bucket].entry_start = <uint32_t>self.count
            buckets[next_bucket].blob_start = <uint32_t>blob_offset
            next_bucket += 1
        memcpy(base + regions[3], self.tld_offsets, (self.tlds.tld_count + 1) * 4)
        memcpy(base + regions[4], PyBytes_AS_STRING(self.tld_blob), len(self.tld_blob))
        offsets32 = <uint32_t*>(base + regions[5])
        members = <uint16_t*>(base + regions[6])
        n = 0
        for i, key in enumerate(self.sets):
            offsets32[i] = <uint32_t>n
            for member in key:
                members[n] = member
                n += 1
        offsets32[len(self.sets)] = <uint32_t>n
        if checkpoint is not None:
            checkpoint()
        blob = base + regions[7]
        self.filter = <uint32_t*>(base + regions[8])
        written = <uint8_t*>calloc(self.count // 8 + 1, 1)
        if written == NULL:
            raise MemoryError()
        passes = max(1, (self.blob_length + self.blob_bytes_per_pass - 1) // self.blob_bytes_per_pass)
        try:
            for range_number in range(passes):
                # hashes are uniform: equal slices of the hash space hold about equal bytes
                range_low = range_number * (0xFFFFFFFFFFFFFFFF // passes)
                range_high = 0xFFFFFFFFFFFFFFFF if range_number == passes - 1 else \
                    range_low + 0xFFFFFFFFFFFFFFFF // passes - 1
                for member, chunks in self.sources:
                    for chunk in chunks():
                        self.place(bytes(chunk), buckets, blob, written, range_low, range_high)
                if checkpoint is not None:
                    checkpoint()
            for i in range(self.count):
                if not written[i >> 3] & (1 << (i & 7)):
                    raise ValueError("a list changed while it was being compiled")
        finally:
            free(written)

    cdef int place(self, bytes chunk, const Bucket* buckets, uint8_t* blob, uint8_t* written,
                   uint64_t range_low, uint64_t range_high) except -1:
        """Pass 2 over one chunk, for the names whose hash is in [range_low, range_high] only:
        copy each name's stored bytes to its place (first copy) or check that a repeated name
        really is the same name."""
        cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(chunk)
        cdef const uint8_t* end = p + PyBytes_GET_SIZE(chunk)
        cdef char name[256]
        cdef int length
        cdef uint64_t hash
        cdef uint32_t bucket, i, offset
        cdef uint8_t stored
        cdef uint8_t packed[192]
        cdef int zone
        while p < end:
            p = next_name(p, end, name, &length)
            if length > 0:
                hash = ef_hash_seeded(name, length, self.seed)
                if hash < range_low or hash > range_high:
                    continue
                bucket = bucket_of(hash, self.bucket_count)
                offset = buckets[bucket].blob_start
                i = buckets[bucket].entry_start
                while i < self.count and self.pending[i].hash != hash:
                    offset += packed_length(self.pending[i].stored_length)
                    i += 1
                if i >= self.count or bucket_of(self.pending[i].hash, self.bucket_count) != bucket:
                    raise ValueError("a list changed while it was being compiled")
                stored = self.pending[i].stored_length
                pack_name(<const uint8_t*>name, stored, packed)
                if written[i >> 3] & (1 << (i & 7)):
                    if memcmp(blob + offset, packed, packed_length(stored)) != 0:
                        raise HashCollision(f"seed {self.seed}")
                else:
                    memcpy(blob + offset, packed, packed_length(stored))
                    written[i >> 3] |= <uint8_t>(1 << (i & 7))
                    zone = zone_start(<const uint8_t*>name, length)
                    if zone >= 0 and self.filter_blocks:
                        hash = zone_hash(<const uint8_t*>name, length, zone)
                        filter_add(self.filter + (((hash >> 32) * <uint64_t>self.filter_blocks) >> 32) * FILTER_WORDS,
                                   hash)
        return 0


# ---------------------------------------------------------------- addresses

cdef class AddressTable:
    """Longest-prefix results over IPv4 or IPv6 as flat intervals: starts (sorted) and the
    value of each interval (0xFFFFFFFF where nothing matches). Built by policy/compile.py."""

    def __cinit__(self, section, int width):
        cdef const uint8_t[::1] data = section
        cdef uint32_t i
        if width not in (4, 16):
            raise ValueError("width is 4 (IPv4) or 16 (IPv6)")
        self.section = section
        self.width = width
        if data.shape[0] < 8:
            raise TableFormatError("address table: shorter than its header")
        self.count = (<const uint32_t*>&data[0])[0]
        if 8 + <size_t>self.count * (width + 4) != <size_t>data.shape[0]:
            raise TableFormatError("address table: size does not match its count")
        self.starts = &data[0] + 8
        self.values = <const uint32_t*>(&data[0] + 8 + self.count * width)
        for i in range(1, self.count):
            if memcmp(self.starts + (i - 1) * width, self.starts + i * width, width) >= 0:
                raise TableFormatError("address table: interval starts out of order")

    cdef uint32_t find(self, const uint8_t* address) noexcept nogil:
        """The value of the interval holding the address (big-endian bytes of width)."""
        cdef uint32_t low = 0, high = self.count, middle
        while low < high:
            middle = (low + high) >> 1
            if ef_address_at_most(self.starts + middle * self.width, address, self.width):
                low = middle + 1
            else:
                high = middle
        return self.values[low - 1] if low else 0xFFFFFFFF

    def lookup(self, bytes address):
        """The value for a packed address, or None."""
        if len(address) != self.width:
            raise ValueError(f"address must be {self.width} bytes")
        value = self.find(<const uint8_t*>PyBytes_AS_STRING(address))
        return None if value == 0xFFFFFFFF else value


# ---------------------------------------------------------------- decisions

ALWAYS_SCHEDULE = ALWAYS
RULE_ENTRY_SIZE = sizeof(RuleEntry)
NO_GROUP = 0xFFFFFFFF


cdef inline int action_rank(uint8_t action) noexcept nogil:
    # at equal tier and specificity: allow beats the blocking actions, which beat monitor
    return 0 if action == ACTION_ALLOW else (2 if action == ACTION_MONITOR else 1)


cdef inline bint better(const Decision* candidate, const Decision* best) noexcept nogil:
    if best.action == NO_RULE:
        return True
    if candidate.tier != best.tier:
        return candidate.tier < best.tier
    if candidate.match_kind != best.match_kind:
        return candidate.match_kind < best.match_kind
    if candidate.specificity != best.specificity:
        return candidate.specificity > best.specificity
    if action_rank(candidate.action) != action_rank(best.action):
        return action_rank(candidate.action) < action_rank(best.action)
    return candidate.order < best.order


cdef load_address_sets(section, AddressSets* sets):
    """u32 count, u32 offsets[count + 1], u32 members (list id << 8 | prefix length)."""
    cdef const uint8_t[::1] view = section
    cdef uint32_t count
    if view.shape[0] < 8:
        raise TableFormatError("address sets are truncated")
    count = (<const uint32_t*>&view[0])[0]
    if view.shape[0] < 4 + (<size_t>count + 1) * 4:
        raise TableFormatError("address sets are truncated")
    sets.count = count
    sets.offsets = <const uint32_t*>(&view[0] + 4)
    if view.shape[0] != 4 + (<size_t>count + 1) * 4 + <size_t>sets.offsets[count] * 4:
        raise TableFormatError("address set members do not add up")
    for i in range(count):
        if sets.offsets[i + 1] < sets.offsets[i]:
            raise TableFormatError("address set offsets out of order")
    sets.members = sets.offsets + count + 1


cdef inline void no_decision(Decision* decision) noexcept nogil:
    decision.action = NO_RULE
    decision.tier = TIER_DEFAULT
    decision.match_kind = MATCH_NONE
    decision.list_id = -1
    decision.matched = -1
    decision.specificity = -1
    decision.order = 0xFFFFFFFF
    decision.rule_entry = -1


cdef class Classifier:
    """Answers (client, name/address, time) -> decision from the three compiled images: the
    categories' names and addresses, the admin lists' names and addresses, and the policy's
    own (overrides, rules, clients, schedules). Read in place from the mapped sections;
    nothing is copied."""

    def __cinit__(self, dict categories, dict lists, dict policy, int group_count, int list_count,
                  int schedule_count, int64_t window_start_minute, int64_t window_minutes, int default_group,
                  int list_base):
        """categories, lists: sections names, v4, v6, address_sets of the categories and the
        lists image (the lists image's list ids start at list_base); policy: sections names,
        clients_v4, clients_v6, client_macs, rule_cells, rule_entries, tiers, schedules."""
        cdef const uint8_t[::1] view
        self.sections = (categories, lists, policy)
        if group_count < 1 or list_count < 0 or list_count > MEMBER_LIST_MASK + 1 or schedule_count < 0 \
                or schedule_count >= ALWAYS or window_minutes < 0 or not 0 <= default_group < group_count \
                or not 0 <= list_base <= list_count:
            raise TableFormatError("classifier: counts out of range")
        self.group_count, self.list_count, self.schedule_count = group_count, list_count, schedule_count
        self.window_start_minute, self.window_minutes = window_start_minute, window_minutes
        self.default_group = default_group
        self.list_base = list_base
        self.category_names = DomainTable(categories["names"])
        self.list_names = DomainTable(lists["names"])
        self.override_names = DomainTable(policy["names"])
        self.category_v4 = AddressTable(categories["v4"], 4)
        self.category_v6 = AddressTable(categories["v6"], 16)
        self.list_v4 = AddressTable(lists["v4"], 4)
        self.list_v6 = AddressTable(lists["v6"], 16)
        self.clients_v4 = AddressTable(policy["clients_v4"], 4)
        self.clients_v6 = AddressTable(policy["clients_v6"], 16)
        load_address_sets(categories["address_sets"], &self.category_sets)
        load_address_sets(lists["address_sets"], &self.list_sets)

        view = policy["rule_cells"]
        if view.shape[0] != (<size_t>group_count * list_count + 1) * 4:
            raise TableFormatError("classifier: rule cells have the wrong size")
        self.rule_cells = <const uint32_t*>&view[0]
        view = policy["rule_entries"]
        if view.shape[0] % sizeof(RuleEntry) or view.shape[0] // sizeof(RuleEntry) < self.rule_cells[
                group_count * list_count]:
            raise TableFormatError("classifier: rule entries do not add up")
        self.rule_entry_count = <uint32_t>(view.shape[0] // sizeof(RuleEntry))
        self.rule_entries = <const RuleEntry*>&view[0] if view.shape[0] else NULL
        view = policy["tiers"]
        if view.shape[0] != <size_t>list_count:
            raise TableFormatError("classifier: tier table has the wrong size")
        self.tiers = &view[0] if list_count else NULL
        view = policy["schedules"]
        self.schedule_bytes = (window_minutes + 7) // 8
        if view.shape[0] != <size_t>schedule_count * self.schedule_bytes:
            raise TableFormatError("classifier: schedule bitmaps have the wrong size")
        self.schedules = &view[0] if view.shape[0] else NULL
        view = policy["client_macs"]
        if view.shape[0] % 8:
            raise TableFormatError("classifier: client MAC table has the wrong size")
        self.client_macs = <const uint64_t*>&view[0] if view.shape[0] else NULL
        self.client_mac_count = <uint32_t>(view.shape[0] // 8)
        self.check_references()

    def __dealloc__(self):
        free(self.interface_groups)

    cdef check_references(self):
        cdef uint32_t i
        for i in range(<uint32_t>(self.group_count * self.list_count)):
            if self.rule_cells[i + 1] < self.rule_cells[i]:
                raise TableFormatError(f"classifier: rule cell {i} ends before it starts")
        for i in range(self.rule_cells[self.group_count * self.list_count]):
            if self.rule_entries[i].action == NO_RULE or self.rule_entries[i].action > ACTION_MONITOR or (
                    self.rule_entries[i].schedule != ALWAYS and self.rule_entries[i].schedule >= self.schedule_count):
                raise TableFormatError(f"classifier: rule entry {i} is out of range")
        for i in range(<uint32_t>self.list_count):
            if self.tiers[i] > TIER_CATEGORY:
                raise TableFormatError(f"classifier: list {i} has no valid tier")
        for i in range(self.client_mac_count):
            if (self.client_macs[i] & 0xFFFF) >= <uint64_t>self.group_count or (
                    i and self.client_macs[i] >> 16 <= self.client_macs[i - 1] >> 16):
                raise TableFormatError(f"classifier: client MAC entry {i} is out of order or range")
        self.check_group_values(self.clients_v4)
        self.check_group_values(self.clients_v6)

    cdef check_group_values(self, AddressTable table):
        cdef uint32_t i
        for i in range(table.count):
            if table.values[i] != 0xFFFFFFFF and table.values[i] >= <uint32_t>self.group_count:
                raise TableFormatError("classifier: a client network names no group")

    # ---- clients

    cdef int group_for(self, const uint8_t* mac, int ifindex, const uint8_t* address, int width,
                       int* how) noexcept nogil:
        """A MAC match beats an interface match, which beats the longest source CIDR."""
        cdef uint64_t key
        cdef uint32_t low = 0, high = self.client_mac_count, middle, value
        if mac != NULL and self.client_mac_count:
            key = (<uint64_t>mac[0] << 40) | (<uint64_t>mac[1] << 32) | (<uint64_t>mac[2] << 24) | \
                  (<uint64_t>mac[3] << 16) | (<uint64_t>mac[4] << 8) | mac[5]
            while low < high:
                middle = (low + high) >> 1
                if self.client_macs[middle] >> 16 < key:
                    low = middle + 1
                else:
                    high = middle
            if low < self.client_mac_count and self.client_macs[low] >> 16 == key:
                how[0] = CLIENT_BY_MAC
                return <int>(self.client_macs[low] & 0xFFFF)
        if 0 < ifindex < self.interface_group_count and self.interface_groups[ifindex] >= 0:
            how[0] = CLIENT_BY_INTERFACE
            return self.interface_groups[ifindex]
        if width == 4:
            value = self.clients_v4.find(address)
        else:
            value = self.clients_v6.find(address)
        if value != <uint32_t>0xFFFFFFFF:
            how[0] = CLIENT_BY_CIDR
            return <int>value
        how[0] = CLIENT_BY_DEFAULT
        return self.default_group

    def set_interface_groups(self, dict groups):
        """Interface (and VLAN) client matches, resolved by the caller to ifindex -> group."""
        cdef int size = max(groups, default=0) + 1
        cdef int* table = <int*>malloc(size * sizeof(int))
        cdef int i
        if table == NULL:
            raise MemoryError()
        for i in range(size):
            table[i] = -1
        for index, group in groups.items():
            if not 0 <= group < self.group_count or index <= 0:
                free(table)
                raise ValueError(f"interface {index} -> group {group} is out of range")
            table[index] = group
        free(self.interface_groups)
        self.interface_groups = table
        self.interface_group_count = size

    def client_group(self, bytes address, bytes mac=None, int ifindex=0):
        """(group id, how) for a client: how is "mac", "interface", "cidr" or "default"."""
        cdef int how = CLIENT_BY_DEFAULT
        cdef int group
        if len(address) not in (4, 16):
            raise ValueError("address must be 4 or 16 packed bytes")
        if mac is not None and len(mac) != 6:
            raise ValueError("mac must be 6 bytes")
        group = self.group_for(<const uint8_t*>PyBytes_AS_STRING(mac) if mac is not None else NULL, ifindex,
                               <const uint8_t*>PyBytes_AS_STRING(address), len(address), &how)
        return group, ("mac", "interface", "cidr", "default")[how]

    # ---- rules

    cdef bint active(self, const RuleEntry* entry, int64_t now) noexcept nogil:
        cdef int64_t minute
        if now < entry.valid_from or now >= entry.valid_until:
            return False
        if entry.schedule == ALWAYS:
            return True
        minute = now // 60 - self.window_start_minute
        if minute < 0 or minute >= self.window_minutes:
            return False     # outside the compiled window: the supervisor recompiles long before
        return (self.schedules[entry.schedule * self.schedule_bytes + (minute >> 3)] >> (minute & 7)) & 1

    cdef void consider_list(self, int group, int list_id, uint8_t match_kind, int specificity, int matched,
                            int64_t now, Decision* best) noexcept nogil:
        """Every active rule of the group on one list, as a candidate."""
        cdef uint32_t cell = <uint32_t>(group * self.list_count + list_id), i
        cdef const RuleEntry* entry
        cdef Decision candidate
        for i in range(self.rule_cells[cell], self.rule_cells[cell + 1]):
            entry = &self.rule_entries[i]
            if not self.active(entry, now):
                continue
            candidate.action = entry.action
            candidate.tier = self.tiers[list_id]
            candidate.match_kind = match_kind
            candidate.list_id = list_id
            candidate.matched = matched
            candidate.specificity = specificity
            candidate.order = entry.order
            candidate.rule_entry = <int32_t>i
            if better(&candidate, best):
                best[0] = candidate

    cdef void consider_name_set(self, const TableView* table, int set_id, int base, int group, bint full_name,
                                int specificity, int matched, int64_t now, Decision* best) noexcept nogil:
        """Every list of one set of a table whose list ids start at `base`."""
        cdef uint32_t i
        cdef uint16_t member
        cdef int list_id
        for i in range(table.set_offsets[set_id], table.set_offsets[set_id + 1]):
            member = table.set_members[i]
            if member & MEMBER_EXACT and not full_name:
                continue
            list_id = base + (member & MEMBER_LIST_MASK)
            if list_id < self.list_count:
                self.consider_list(group, list_id, MATCH_NAME, specificity, matched, now, best)

    cdef void consider_address_set(self, const AddressSets* sets, uint32_t set_id, int base, int group,
                                   int64_t now, Decision* best) noexcept nogil:
        cdef uint32_t i, member
        if set_id >= sets.count:
            return
        for i in range(sets.offsets[set_id], sets.offsets[set_id + 1]):
            member = sets.members[i]
            if (member >> 8) + <uint32_t>base < <uint32_t>self.list_count:
                self.consider_list(group, base + (member >> 8), MATCH_ADDRESS, member & 0xFF, member & 0xFF, now,
                                   best)

    cdef int name_sets(self, NameCache* cache, const uint8_t* name, int length, int* starts, int* override_sets,
                       int* list_sets, int* category_sets) noexcept nogil:
        """The set id (or -1) of every suffix of the name in the overrides', the admin lists' and
        the categories' table, most specific first; returns the count. With a cache (or NULL),
        a name seen before is answered from it and a new one is remembered when at most
        CACHED_MATCHES of its suffixes are listed (the value: that count, then per match the
        suffix's index | its table << CACHED_TABLE_SHIFT and its set id, low byte first; a
        cached name has at most 56 labels, so the index fits below the table)."""
        cdef uint64_t hash = 0
        cdef const CachedName* entry = NULL
        cdef CachedName* stored
        cdef const uint8_t* match
        cdef uint8_t* value
        cdef int* tables[3]
        cdef int count, i, table, matches = 0, set_id
        tables[CACHED_CATEGORIES] = category_sets
        tables[CACHED_LISTS] = list_sets
        tables[CACHED_OVERRIDES] = override_sets
        if cache != NULL:
            hash = cache_hash(name, length)
            entry = cache_find(cache, hash, name, length)
        if entry != NULL:
            cache.hits += 1
            count = name_suffixes(name, length, starts)
            for i in range(count):
                override_sets[i] = -1
                list_sets[i] = -1
                category_sets[i] = -1
            for i in range(min(entry.value[0], CACHED_MATCHES)):
                match = &entry.value[1 + 3 * i]
                set_id = match[1] | (match[2] << 8)
                table = match[0] >> CACHED_TABLE_SHIFT
                if table <= CACHED_OVERRIDES:
                    tables[table][match[0] & CACHED_SUFFIX_MASK] = set_id
            return count
        count = suffix_sets(&self.override_names.view, name, length, starts, override_sets)
        suffix_sets(&self.list_names.view, name, length, starts, list_sets)
        suffix_sets(&self.category_names.view, name, length, starts, category_sets)
        if cache == NULL:
            return count
        cache.misses += 1
        for i in range(count):
            matches += (override_sets[i] >= 0) + (list_sets[i] >= 0) + (category_sets[i] >= 0)
        if matches > CACHED_MATCHES:
            return count
        stored = cache_store(cache, hash, name, length)
        if stored == NULL:
            return count
        value = stored.value
        value[0] = <uint8_t>matches
        value += 1
        for i in range(count):
            for table in range(CACHED_OVERRIDES + 1):
                if tables[table][i] >= 0:
                    value[0] = <uint8_t>(i | (table << CACHED_TABLE_SHIFT))
                    value[1], value[2] = tables[table][i] & 0xFF, tables[table][i] >> 8
                    value += 3
        return count

    cdef Decision decide_flow(self, int group, const uint8_t* name, int length, const uint8_t* address,
                              int width, int64_t now, NameCache* cache) noexcept nogil:
        """The winning rule for a name (may be NULL) and a destination address (may be NULL);
        cache: the caller's name cache, or NULL."""
        cdef int starts[MAX_LABELS]
        cdef int category_sets[MAX_LABELS]
        cdef int list_sets[MAX_LABELS]
        cdef int override_sets[MAX_LABELS]
        cdef int count, i
        cdef Decision best
        no_decision(&best)
        if group < 0 or group >= self.group_count:
            return best
        if name != NULL and 0 < length <= 253:
            count = self.name_sets(cache, name, length, starts, override_sets, list_sets, category_sets)
            for i in range(count):
                # specificity: the number of labels of the matched suffix
                if override_sets[i] >= 0:
                    self.consider_name_set(&self.override_names.view, override_sets[i], 0, group, i == 0,
                                           count - i, starts[i], now, &best)
                if list_sets[i] >= 0:
                    self.consider_name_set(&self.list_names.view, list_sets[i], self.list_base, group, i == 0,
                                           count - i, starts[i], now, &best)
                if category_sets[i] >= 0:
                    self.consider_name_set(&self.category_names.view, category_sets[i], 0, group, i == 0,
                                           count - i, starts[i], now, &best)
        if address != NULL and width == 4:
            self.consider_address_set(&self.category_sets, self.category_v4.find(address), 0, group, now, &best)
            self.consider_address_set(&self.list_sets, self.list_v4.find(address), self.list_base, group, now,
                                      &best)
        elif address != NULL and width == 16:
            self.consider_address_set(&self.category_sets, self.category_v6.find(address), 0, group, now, &best)
            self.consider_address_set(&self.list_sets, self.list_v6.find(address), self.list_base, group, now,
                                      &best)
        return best

    def decide(self, int group, name, address, double now, url_matches=()):
        """(action, tier, match_kind, list_id, matched, order, rule_entry) for a normalised name
        (bytes or None), a packed destination address (or None) and URL-prefix matches found
        by the caller ((list id, prefix length) pairs). action 0: no rule, the group default."""
        cdef Decision decision
        cdef const uint8_t* name_bytes = NULL
        cdef const uint8_t* address_bytes = NULL
        cdef int name_length = 0, width = 0
        if name is not None:
            name_bytes = <const uint8_t*>PyBytes_AS_STRING(name)
            name_length = <int>PyBytes_GET_SIZE(name)
        if address is not None:
            if len(address) not in (4, 16):
                raise ValueError("address must be 4 or 16 packed bytes")
            address_bytes = <const uint8_t*>PyBytes_AS_STRING(address)
            width = len(address)
        decision = self.decide_flow(group, name_bytes, name_length, address_bytes, width, <int64_t>now, NULL)
        if 0 <= group < self.group_count:
            for list_id, prefix_length in url_matches:
                if 0 <= list_id < self.list_count:
                    self.consider_list(group, list_id, MATCH_URL, prefix_length, prefix_length, <int64_t>now,
                                       &decision)
        return (decision.action, decision.tier, decision.match_kind, decision.list_id, decision.matched,
                decision.order, decision.rule_entry)
