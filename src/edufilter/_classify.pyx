# cython: language_level=3
"""The classify stage's hot half: a compiled domain-suffix table, built once by the
control path and read in place (from an mmap) by every worker.

Layout: names are hashed (64-bit, seeded) and sorted by hash; bucket b holds the names
whose hash falls in the b-th slice of the hash space (about 8 names). Per name the table
keeps a 16-bit fingerprint, the stored name's length, a TLD code and a set id; the name
bytes themselves (without a common TLD, which the code implies) are kept for the exact
check, so no hash collision can ever match the wrong name. About 21 bytes per name.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, qsort, realloc
from libc.string cimport memchr, memcmp, memcpy, memset

from edufilter._fastpath cimport normalise_name_into

cdef extern from "_hash.h":
    uint64_t ef_hash_seeded(const void* data, size_t n, uint64_t seed) nogil

cdef extern from *:
    """
    #define EF_PREFETCH(p) __builtin_prefetch((const void*)(p))
    """
    void EF_PREFETCH(const void* p) nogil

cdef enum:
    HEADER_WORDS = 16

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
    cdef int dot = length - 1
    cdef uint32_t slot
    cdef uint8_t code
    cdef const uint8_t* tld
    cdef int n
    while dot >= 0 and name[dot] != b'.':
        dot -= 1
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
                memcmp(table.tld_bytes + table.tld_offsets[code - 1], tld, n) == 0:
            tld_length[0] = n
            return code
        slot = (slot + 1) & table.tld_slot_mask


# ---------------------------------------------------------------- lookup

cdef inline int find_coded(const TableView* table, const uint8_t* name, int length, uint8_t code,
                           int stored_length) noexcept nogil:
    cdef uint64_t hash = ef_hash_seeded(name, length, table.seed)
    cdef uint32_t bucket = bucket_of(hash, table.bucket_count)
    cdef uint32_t i = table.buckets[bucket].entry_start
    cdef uint32_t end = table.buckets[bucket + 1].entry_start
    cdef uint32_t offset = table.buckets[bucket].blob_start
    cdef uint16_t fingerprint = <uint16_t>(hash & table.fingerprint_mask)
    cdef const Entry* entry
    cdef uint8_t packed[192]
    cdef bint is_packed = False
    while i < end:
        entry = &table.entries[i]
        if entry.fingerprint == fingerprint and entry.stored_length == stored_length and entry.tld_code == code:
            if not is_packed:
                pack_name(name, stored_length, packed)
                is_packed = True
            if memcmp(table.blob + offset, packed, packed_length(stored_length)) == 0:
                return entry.set_id
        offset += packed_length(entry.stored_length)
        i += 1
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


cdef int suffix_sets(const TableView* table, const uint8_t* name, int length,
                     int* starts, int* set_ids) noexcept nogil:
    """Set id (or -1) of every suffix of the name, most specific first; returns the count."""
    cdef int count = name_suffixes(name, length, starts)
    cdef int tld_length = 0, i, suffix_length
    cdef uint8_t code = tld_code_of(table, name, length, &tld_length)
    cdef uint64_t hash
    for i in range(count):
        # warm the buckets of every suffix before walking any of them
        hash = ef_hash_seeded(name + starts[i], length - starts[i], table.seed)
        EF_PREFETCH(&table.buckets[bucket_of(hash, table.bucket_count)])
    for i in range(count):
        suffix_length = length - starts[i]
        if code and suffix_length > tld_length:
            set_ids[i] = find_coded(table, name + starts[i], suffix_length, code, suffix_length - tld_length - 1)
        else:
            set_ids[i] = find_coded(table, name + starts[i], suffix_length, 0, suffix_length)
    return count


cdef class DomainTable:
    """A read-only view of one domain-table section (e.g. a slice of a mapped image)."""

    cdef TableView view
    cdef object section

    def __cinit__(self, section):
        cdef const uint8_t[::1] data = section
        cdef const uint64_t* header
        cdef size_t length = data.shape[0]
        self.section = section
        memset(&self.view, 0, sizeof(TableView))
        if length < HEADER_WORDS * 8:
            raise TableFormatError("domain table: section shorter than its header")
        header = <const uint64_t*>&data[0]
        if header[0] != MAGIC:
            raise TableFormatError("domain table: bad magic")
        if header[15] != length:
            raise TableFormatError(f"domain table: section is {length} bytes, header says {header[15]}")
        if header[1] == 0 or header[1] >= (1 << 31) or header[2] >= (1 << 31) or header[3] > 65536 \
                or header[4] > 255 or header[6] > 0xFFFF:
            raise TableFormatError("domain table: counts out of range")
        self.view.bucket_count = <uint32_t>header[1]
        self.view.entry_count = <uint32_t>header[2]
        self.view.set_count = <uint32_t>header[3]
        self.view.tld_count = <uint32_t>header[4]
        self.view.seed = header[5]
        self.view.fingerprint_mask = <uint32_t>header[6]
        self.check_region(header[7], (self.view.bucket_count + 1) * sizeof(Bucket), length, "buckets")
        self.check_region(header[8], self.view.entry_count * sizeof(Entry), length, "entries")
        self.check_region(header[9], (self.view.tld_count + 1) * 4, length, "TLD offsets")
        self.check_region(header[11], (self.view.set_count + 1) * 4, length, "set offsets")
        self.check_region(header[13], header[14], length, "names")
        self.view.buckets = <const Bucket*>(&data[0] + header[7])
        self.view.entries = <const Entry*>(&data[0] + header[8])
        self.view.tld_offsets = <const uint32_t*>(&data[0] + header[9])
        self.check_region(header[10], self.view.tld_offsets[self.view.tld_count], length, "TLD names")
        self.view.tld_bytes = &data[0] + header[10]
        self.view.set_offsets = <const uint32_t*>(&data[0] + header[11])
        self.check_region(header[12], self.view.set_offsets[self.view.set_count] * 2, length, "set members")
        self.view.set_members = <const uint16_t*>(&data[0] + header[12])
        self.view.blob = &data[0] + header[13]
        self.validate(header[14])
        self.view.tld_slots = build_tld_slots(self.view.tld_offsets, self.view.tld_bytes,
                                              self.view.tld_count, &self.view.tld_slot_mask)
        if self.view.tld_slots == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.view.tld_slots)

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
                blob += packed_length(t.entries[i].stored_length)
                if t.entries[i].set_id >= t.set_count or t.entries[i].tld_code > t.tld_count:
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

        Names are taken BATCH at a time and their probes interleaved, so the cache misses
        of one name's buckets overlap with the others' instead of adding up."""
        cdef Probe* probes = <Probe*>malloc(BATCH * MAX_LABELS * sizeof(Probe))
        cdef const uint8_t* pointers[BATCH]
        cdef int lengths[BATCH]
        cdef bint found[BATCH]
        cdef Py_ssize_t listed = 0, start, n = len(names), i
        cdef int batch, j
        cdef object name
        if probes == NULL:
            raise MemoryError()
        try:
            for start in range(0, n, BATCH):
                batch = <int>min(BATCH, n - start)
                for j in range(batch):
                    name = names[start + j]
                    if type(name) is not bytes:
                        raise TypeError("count_listed takes a list of bytes")
                    pointers[j] = <const uint8_t*>PyBytes_AS_STRING(name)
                    lengths[j] = <int>PyBytes_GET_SIZE(name) if 0 < PyBytes_GET_SIZE(name) <= 253 else 0
                with nogil:
                    find_batch(&self.view, pointers, lengths, batch, probes, found)
                for j in range(batch):
                    listed += found[j]
        finally:
            free(probes)
        return listed


cdef enum:
    BATCH = 16

cdef struct Probe:
    const uint8_t* suffix
    int length
    int stored_length
    uint8_t code
    uint16_t fingerprint
    uint32_t bucket
    int owner


cdef void find_batch(const TableView* table, const uint8_t** names, const int* lengths, int count,
                     Probe* probes, bint* found) noexcept nogil:
    """found[i]: whether any suffix of names[i] is listed; three passes so that every
    probe's memory is requested before any of it is needed."""
    cdef int starts[MAX_LABELS]
    cdef int probe_count = 0, i, j, suffixes, tld_length
    cdef uint8_t code
    cdef uint64_t hash
    cdef Probe* probe
    cdef const Entry* entry
    cdef uint32_t e, end, offset
    cdef uint8_t packed[192]
    for i in range(count):
        found[i] = False
        if lengths[i] == 0:
            continue
        suffixes = name_suffixes(names[i], lengths[i], starts)
        tld_length = 0
        code = tld_code_of(table, names[i], lengths[i], &tld_length)
        for j in range(suffixes):
            probe = &probes[probe_count]
            probe.suffix = names[i] + starts[j]
            probe.length = lengths[i] - starts[j]
            if code and probe.length > tld_length:
                probe.code = code
                probe.stored_length = probe.length - tld_length - 1
            else:
                probe.code = 0
                probe.stored_length = probe.length
            hash = ef_hash_seeded(probe.suffix, probe.length, table.seed)
            probe.fingerprint = <uint16_t>(hash & table.fingerprint_mask)
            probe.bucket = bucket_of(hash, table.bucket_count)
            probe.owner = i
            EF_PREFETCH(&table.buckets[probe.bucket])
            probe_count += 1
    for j in range(probe_count):
        EF_PREFETCH(&table.entries[table.buckets[probes[j].bucket].entry_start])
    for j in range(probe_count):
        probe = &probes[j]
        if found[probe.owner]:
            continue
        e = table.buckets[probe.bucket].entry_start
        end = table.buckets[probe.bucket + 1].entry_start
        offset = table.buckets[probe.bucket].blob_start
        while e < end:
            entry = &table.entries[e]
            if entry.fingerprint == probe.fingerprint and entry.stored_length == probe.stored_length \
                    and entry.tld_code == probe.code:
                pack_name(probe.suffix, probe.stored_length, packed)
                if memcmp(table.blob + offset, packed, packed_length(probe.stored_length)) == 0:
                    found[probe.owner] = True
                    break
            offset += packed_length(entry.stored_length)
            e += 1


# ---------------------------------------------------------------- building

cdef packed struct Pending:
    uint64_t hash
    uint16_t member           # list id | MEMBER_EXACT; the set id once deduplicated
    uint8_t stored_length
    uint8_t tld_code


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
    cdef list sources
    cdef list sets
    cdef readonly Py_ssize_t invalid_names
    cdef readonly Py_ssize_t names_read
    cdef uint32_t bucket_count
    cdef size_t section_length
    cdef size_t blob_length
    cdef size_t member_count
    cdef bint prepared

    def __cinit__(self, tlds=(), uint64_t seed=0, double entries_per_bucket=8.0,
                  uint32_t fingerprint_mask=0xFFFF):
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

    cdef bint grow(self) except False:
        cdef size_t capacity = self.capacity * 3 // 2 + 4096
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
        cdef const uint8_t* line_end
        cdef char name[256]
        cdef int length, tld_length
        cdef uint8_t code
        cdef Pending* entry
        while p < end:
            line_end = <const uint8_t*>memchr(p, b'\n', end - p)
            if line_end == NULL:
                line_end = end
            length = <int>(line_end - p)
            if length and p[length - 1] == b'\r':
                length -= 1
            if length:
                self.names_read += 1
                length = normalise_name_into(p, length, name) if length <= 254 else -1
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
                    self.count += 1
            p = line_end + 1
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
            qsort(self.pending, self.count, sizeof(Pending), compare_pending)
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
        self.section_length = self.layout()[7]
        self.prepared = True
        return self.section_length

    cdef tuple layout(self):
        """Byte offsets of the regions: buckets, entries, TLD offsets, TLD names, set offsets,
        set members, names, end."""
        cdef size_t offset = HEADER_WORDS * 8
        offsets = []
        for size in ((self.bucket_count + 1) * sizeof(Bucket), self.count * sizeof(Entry),
                     (self.tlds.tld_count + 1) * 4, len(self.tld_blob), (len(self.sets) + 1) * 4,
                     self.member_count * 2, self.blob_length):
            offsets.append(offset)
            offset = align8(offset + size)
        offsets.append(offset)
        return tuple(offsets)

    def write(self, out, checkpoint=None):
        """Fills out (writable, exactly prepare() bytes) with the section: pass 2 places names.
        checkpoint(), when given, is called after each chunk of pass 2."""
        cdef uint8_t[::1] buffer = out
        cdef uint8_t* base
        cdef uint64_t* header
        cdef Bucket* buckets
        cdef Entry* entries
        cdef uint32_t* offsets32
        cdef uint16_t* members
        cdef uint8_t* blob
        cdef uint8_t* written
        cdef uint32_t bucket, next_bucket = 0
        cdef size_t i, blob_offset = 0, n
        cdef size_t regions[8]
        if not self.prepared:
            self.prepare()
        if buffer.shape[0] != self.section_length:
            raise ValueError(f"section buffer must be {self.section_length} bytes")
        base = &buffer[0]
        memset(base, 0, self.section_length)
        layout = self.layout()
        for i in range(8):
            regions[i] = layout[i]
        header = <uint64_t*>base
        for i, value in enumerate((MAGIC, self.bucket_count, self.count, len(self.sets), self.tlds.tld_count,
                                   self.seed, self.fingerprint_mask, *layout[:7], self.blob_length,
                                   self.section_length)):
            header[i] = value
        buckets = <Bucket*>(base + regions[0])
        entries = <Entry*>(base + regions[1])
        for i in range(self.count):
            bucket = bucket_of(self.pending[i].hash, self.bucket_count)
            while next_bucket <= bucket:
                buckets[next_bucket].entry_start = <uint32_t>i
                buckets[next_bucket].blob_start = <uint32_t>blob_offset
                next_bucket += 1
            entries[i].fingerprint = <uint16_t>(self.pending[i].hash & self.fingerprint_mask)
            entries[i].stored_length = self.pending[i].stored_length
            entries[i].tld_code = self.pending[i].tld_code
            entries[i].set_id = self.pending[i].member
            blob_offset += packed_length(self.pending[i].stored_length)
        while next_bucket <= self.bucket_count:
            buckets[next_bucket].entry_start = <uint32_t>self.count
            buckets[next_bucket].blob_start = <uint32_t>blob_offset
            next_bucket += 1
        memcpy(base + regions[2], self.tld_offsets, (self.tlds.tld_count + 1) * 4)
        memcpy(base + regions[3], PyBytes_AS_STRING(self.tld_blob), len(self.tld_blob))
        offsets32 = <uint32_t*>(base + regions[4])
        members = <uint16_t*>(base + regions[5])
        n = 0
        for i, key in enumerate(self.sets):
            offsets32[i] = <uint32_t>n
            for member in key:
                members[n] = member
                n += 1
        offsets32[len(self.sets)] = <uint32_t>n
        blob = base + regions[6]
        written = <uint8_t*>calloc(self.count // 8 + 1, 1)
        if written == NULL:
            raise MemoryError()
        try:
            for member, chunks in self.sources:
                for chunk in chunks():
                    self.place(bytes(chunk), buckets, blob, written)
                    if checkpoint is not None:
                        checkpoint()
            for i in range(self.count):
                if not written[i >> 3] & (1 << (i & 7)):
                    raise ValueError("a list changed while it was being compiled")
        finally:
            free(written)

    cdef int place(self, bytes chunk, const Bucket* buckets, uint8_t* blob, uint8_t* written) except -1:
        """Pass 2 over one chunk: copy each name's stored bytes to its place (first copy) or
        check that a repeated name really is the same name."""
        cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(chunk)
        cdef const uint8_t* end = p + PyBytes_GET_SIZE(chunk)
        cdef const uint8_t* line_end
        cdef char name[256]
        cdef int length
        cdef uint64_t hash
        cdef uint32_t bucket, i, offset
        cdef uint8_t stored
        cdef uint8_t packed[192]
        while p < end:
            line_end = <const uint8_t*>memchr(p, b'\n', end - p)
            if line_end == NULL:
                line_end = end
            length = <int>(line_end - p)
            if length and p[length - 1] == b'\r':
                length -= 1
            if length:
                length = normalise_name_into(p, length, name) if length <= 254 else -1
                if length >= 0:
                    hash = ef_hash_seeded(name, length, self.seed)
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
            p = line_end + 1
        return 0


# ---------------------------------------------------------------- addresses

cdef class AddressTable:
    """Longest-prefix results over IPv4 or IPv6 as flat intervals: starts (sorted) and the
    value of each interval (0xFFFFFFFF where nothing matches). Built by policy/compile.py."""

    cdef object section
    cdef uint32_t count
    cdef uint32_t width            # 4 or 16 bytes per start
    cdef const uint8_t* starts     # big-endian, width bytes each, strictly increasing
    cdef const uint32_t* values

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
            if memcmp(self.starts + middle * self.width, address, self.width) <= 0:
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

cpdef enum RuleAction:
    NO_RULE = 0
    ACTION_ALLOW = 1
    ACTION_BLOCK = 2
    ACTION_DROP = 3
    ACTION_SINKHOLE = 4
    ACTION_MONITOR = 5

cpdef enum Tier:
    TIER_OVERRIDE = 0
    TIER_ADMIN = 1
    TIER_CATEGORY = 2
    TIER_DEFAULT = 3

cdef enum:
    ALWAYS = 0xFFFF

# One group's rule for one list; overrides carry their validity window in seconds.
cdef packed struct RuleCell:
    uint8_t action
    uint8_t reserved
    uint16_t schedule
    uint32_t rule_index
    int64_t valid_from
    int64_t valid_until

RULE_CELL_SIZE = sizeof(RuleCell)
ALWAYS_SCHEDULE = ALWAYS

cdef struct Decision:
    uint8_t action
    uint8_t tier
    uint8_t by_address
    int32_t list_id
    int32_t matched            # suffix start in the name, or prefix length of the address match
    int32_t rule_index

cdef inline int action_rank(uint8_t action) noexcept nogil:
    # at equal tier and specificity: allow beats block, block beats monitor
    return 0 if action == ACTION_ALLOW else (2 if action == ACTION_MONITOR else 1)

cdef inline bint better(const Decision* candidate, int specificity, const Decision* best,
                        int best_specificity) noexcept nogil:
    if best.action == NO_RULE:
        return True
    if candidate.tier != best.tier:
        return candidate.tier < best.tier
    if specificity != best_specificity:
        return specificity > best_specificity
    if action_rank(candidate.action) != action_rank(best.action):
        return action_rank(candidate.action) < action_rank(best.action)
    return candidate.rule_index < best.rule_index


cdef class Classifier:
    """Answers (group, name or address, time) -> decision from two compiled images: the
    categories' names and addresses, and the policy's own (admin lists, overrides, rules)."""

    cdef DomainTable category_names
    cdef DomainTable policy_names
    cdef AddressTable category_v4, category_v6, policy_v4, policy_v6, clients_v4, clients_v6
    cdef object rules_section, schedules_section, tiers_section, address_sets_section
    cdef const RuleCell* rules
    cdef const uint8_t* tiers
    cdef const uint8_t* schedules
    cdef const uint32_t* address_set_offsets
    cdef const uint32_t* address_set_members
    cdef uint32_t address_set_count
    cdef readonly int group_count
    cdef readonly int list_count
    cdef int schedule_count
    cdef int64_t window_start_minute
    cdef int64_t window_minutes

    def __cinit__(self, DomainTable category_names, DomainTable policy_names, addresses, rules, tiers,
                  schedules, address_sets, int group_count, int list_count, int schedule_count,
                  int64_t window_start_minute, int64_t window_minutes):
        """addresses: (category v4, category v6, policy v4, policy v6, clients v4, clients v6)
        AddressTables; rules: group_count x list_count RuleCells; tiers: one byte per list;
        schedules: schedule_count bitmaps of window_minutes bits; address_sets: u32 count,
        offsets, members (list id << 8 | prefix length)."""
        cdef const uint8_t[::1] rules_view = rules
        cdef const uint8_t[::1] tiers_view = tiers
        cdef const uint8_t[::1] sets_view = address_sets
        cdef const uint8_t[::1] schedules_view = schedules
        cdef uint32_t count
        self.category_names, self.policy_names = category_names, policy_names
        (self.category_v4, self.category_v6, self.policy_v4, self.policy_v6,
         self.clients_v4, self.clients_v6) = addresses
        if group_count < 1 or list_count < 0 or list_count > MEMBER_LIST_MASK + 1 or schedule_count < 0 \
                or window_minutes < 0:
            raise TableFormatError("classifier: counts out of range")
        if rules_view.shape[0] != <size_t>group_count * list_count * sizeof(RuleCell) or \
                tiers_view.shape[0] != <size_t>list_count:
            raise TableFormatError("classifier: rule matrix or tier table has the wrong size")
        if schedules_view.shape[0] != <size_t>schedule_count * ((window_minutes + 7) // 8):
            raise TableFormatError("classifier: schedule bitmaps have the wrong size")
        if sets_view.shape[0] < 8:
            raise TableFormatError("classifier: address sets are truncated")
        count = (<const uint32_t*>&sets_view[0])[0]
        if sets_view.shape[0] < 8 + (count + 1) * 4:
            raise TableFormatError("classifier: address sets are truncated")
        self.address_set_offsets = <const uint32_t*>(&sets_view[0] + 4)
        if sets_view.shape[0] != 4 + (count + 1) * 4 + self.address_set_offsets[count] * 4:
            raise TableFormatError("classifier: address set members do not add up")
        self.address_set_members = self.address_set_offsets + count + 1
        self.address_set_count = count
        self.rules_section, self.tiers_section = rules, tiers
        self.schedules_section, self.address_sets_section = schedules, address_sets
        self.rules = <const RuleCell*>&rules_view[0] if rules_view.shape[0] else NULL
        self.tiers = &tiers_view[0] if tiers_view.shape[0] else NULL
        self.schedules = &schedules_view[0] if schedules_view.shape[0] else NULL
        self.group_count, self.list_count, self.schedule_count = group_count, list_count, schedule_count
        self.window_start_minute, self.window_minutes = window_start_minute, window_minutes
        self.check_references()

    cdef check_references(self):
        cdef Py_ssize_t i
        for i in range(self.group_count * self.list_count):
            if self.rules[i].action > ACTION_MONITOR or (
                    self.rules[i].schedule != ALWAYS and self.rules[i].schedule >= self.schedule_count):
                raise TableFormatError(f"classifier: rule cell {i} is out of range")
        for i in range(self.list_count):
            if self.tiers[i] > TIER_CATEGORY:
                raise TableFormatError(f"classifier: list {i} has no valid tier")

    cdef inline bint active(self, const RuleCell* cell, int64_t now) noexcept nogil:
        cdef int64_t minute
        if now < cell.valid_from or now >= cell.valid_until:
            return False
        if cell.schedule == ALWAYS:
            return True
        minute = now // 60 - self.window_start_minute
        if minute < 0 or minute >= self.window_minutes:
            return True      # outside the compiled window: restrictive rules stay on until recompiled
        return (self.schedules[cell.schedule * ((self.window_minutes + 7) // 8) + (minute >> 3)] >> (minute & 7)) & 1

    cdef void consider_set(self, const TableView* table, int set_id, int group, bint full_name,
                           int specificity, int matched, int64_t now, Decision* best,
                           int* best_specificity) noexcept nogil:
        cdef uint32_t i
        cdef uint16_t member
        cdef int list_id
        cdef const RuleCell* cell
        cdef Decision candidate
        for i in range(table.set_offsets[set_id], table.set_offsets[set_id + 1]):
            member = table.set_members[i]
            if member & MEMBER_EXACT and not full_name:
                continue
            list_id = member & MEMBER_LIST_MASK
            if list_id >= self.list_count:
                continue
            cell = &self.rules[group * self.list_count + list_id]
            if cell.action == NO_RULE or not self.active(cell, now):
                continue
            candidate.action = cell.action
            candidate.tier = self.tiers[list_id]
            candidate.by_address = 0
            candidate.list_id = list_id
            candidate.matched = matched
            candidate.rule_index = cell.rule_index
            if better(&candidate, specificity, best, best_specificity[0]):
                best[0] = candidate
                best_specificity[0] = specificity

    cdef Decision decide_name(self, int group, const uint8_t* name, int length, int64_t now) noexcept nogil:
        cdef int starts[MAX_LABELS]
        cdef int category_sets[MAX_LABELS]
        cdef int policy_sets[MAX_LABELS]
        cdef int count, i, best_specificity = -1
        cdef Decision best
        best.action = NO_RULE
        best.tier = TIER_DEFAULT
        best.by_address = 0
        best.list_id = -1
        best.matched = -1
        best.rule_index = -1
        if group < 0 or group >= self.group_count or length <= 0 or length > 253:
            return best
        count = suffix_sets(&self.policy_names.view, name, length, starts, policy_sets)
        suffix_sets(&self.category_names.view, name, length, starts, category_sets)
        for i in range(count):
            # specificity: more labels matched is more specific
            if policy_sets[i] >= 0:
                self.consider_set(&self.policy_names.view, policy_sets[i], group, i == 0, count - i,
                                  starts[i], now, &best, &best_specificity)
            if category_sets[i] >= 0:
                self.consider_set(&self.category_names.view, category_sets[i], group, i == 0, count - i,
                                  starts[i], now, &best, &best_specificity)
        return best

    cdef void consider_address(self, uint32_t set_id, int group, int64_t now, Decision* best,
                               int* best_specificity) noexcept nogil:
        cdef uint32_t i, member
        cdef int list_id
        cdef const RuleCell* cell
        cdef Decision candidate
        if set_id >= self.address_set_count:
            return
        for i in range(self.address_set_offsets[set_id], self.address_set_offsets[set_id + 1]):
            member = self.address_set_members[i]
            list_id = member >> 8
            if list_id >= self.list_count:
                continue
            cell = &self.rules[group * self.list_count + list_id]
            if cell.action == NO_RULE or not self.active(cell, now):
                continue
            candidate.action = cell.action
            candidate.tier = self.tiers[list_id]
            candidate.by_address = 1
            candidate.list_id = list_id
            candidate.matched = member & 0xFF
            candidate.rule_index = cell.rule_index
            if better(&candidate, member & 0xFF, best, best_specificity[0]):
                best[0] = candidate
                best_specificity[0] = member & 0xFF

    cdef Decision decide_address(self, int group, const uint8_t* address, int width, int64_t now) noexcept nogil:
        cdef Decision best
        cdef int best_specificity = -1
        best.action = NO_RULE
        best.tier = TIER_DEFAULT
        best.by_address = 1
        best.list_id = -1
        best.matched = -1
        best.rule_index = -1
        if group < 0 or group >= self.group_count:
            return best
        if width == 4:
            self.consider_address(self.category_v4.find(address), group, now, &best, &best_specificity)
            self.consider_address(self.policy_v4.find(address), group, now, &best, &best_specificity)
        else:
            self.consider_address(self.category_v6.find(address), group, now, &best, &best_specificity)
            self.consider_address(self.policy_v6.find(address), group, now, &best, &best_specificity)
        return best

    def client_group(self, bytes address):
        """The group id whose client CIDR is the longest match for the address, or None."""
        cdef uint32_t value
        if len(address) == 4:
            value = self.clients_v4.find(<const uint8_t*>PyBytes_AS_STRING(address))
        elif len(address) == 16:
            value = self.clients_v6.find(<const uint8_t*>PyBytes_AS_STRING(address))
        else:
            raise ValueError("address must be 4 or 16 packed bytes")
        return None if value == 0xFFFFFFFF else value

    def decide(self, int group, name, address, double now):
        """(action, tier, by_address, list_id, matched, rule_index) for a normalised name
        (bytes) — or, when no rule matches the name, the destination address (packed bytes).
        action 0 means no rule matched: the group's default applies."""
        cdef Decision decision
        decision.action = NO_RULE
        if name is not None:
            decision = self.decide_name(group, <const uint8_t*>PyBytes_AS_STRING(name), len(name), <int64_t>now)
        if decision.action == NO_RULE and address is not None:
            if len(address) not in (4, 16):
                raise ValueError("address must be 4 or 16 packed bytes")
            decision = self.decide_address(group, <const uint8_t*>PyBytes_AS_STRING(address), len(address),
                                           <int64_t>now)
        return (decision.action, decision.tier, bool(decision.by_address), decision.list_id, decision.matched,
                decision.rule_index)

    def decide_batch(self, int group, list names, double now):
        """How many of the (normalised, bytes) names a rule blocks: the batch benchmark."""
        cdef Py_ssize_t blocked = 0
        cdef Decision decision
        cdef object name
        for name in names:
            if type(name) is not bytes:
                raise TypeError("decide_batch takes a list of bytes")
            decision = self.decide_name(group, <const uint8_t*>PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name),
                                        <int64_t>now)
            if decision.action != NO_RULE and decision.action != ACTION_ALLOW and decision.action != ACTION_MONITOR:
                blocked += 1
        return blocked
