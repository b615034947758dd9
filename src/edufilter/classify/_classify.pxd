# The typed surface of the classify stage: the compiled tables, read in place from the
# mapped images, and the Classifier, for cimport by the enforcement loop.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

cdef enum:
    MEMBER_EXACT = 0x8000        # a set member that matches the full name only
    MEMBER_LIST_MASK = 0x7FFF
    MAX_LABELS = 128
    ALWAYS = 0xFFFF              # a rule entry without a schedule
    CLIENT_BY_MAC = 0
    CLIENT_BY_INTERFACE = 1
    CLIENT_BY_CIDR = 2
    CLIENT_BY_DEFAULT = 3

# One bucket: where its entries and their name bytes start.
cdef packed struct Bucket:
    uint32_t entry_start
    uint32_t blob_start

cdef struct TableView:
    uint32_t bucket_count
    uint32_t entry_count
    uint32_t set_count
    uint32_t tld_count
    uint64_t seed
    uint32_t fingerprint_mask
    uint32_t single_labels       # nonzero when some listed name is a bare TLD
    const Bucket* buckets
    const uint32_t* keys         # per name: fingerprint | stored length << 16 | TLD code << 24
    const uint16_t* set_ids      # per name: which lists it is in
    const uint8_t* blob
    const uint32_t* set_offsets
    const uint16_t* set_members
    const uint32_t* tld_offsets  # TLD code c (1-based) spans tld_bytes[offsets[c-1]:offsets[c]]
    const uint8_t* tld_bytes
    uint8_t* tld_slots           # open-addressed TLD hash -> code, built when the view is made
    uint32_t tld_slot_mask
    const uint32_t* filter       # zone filter: filter_blocks blocks of 8 words (0 blocks: none)
    uint32_t filter_blocks

cdef int table_find(const TableView* table, const uint8_t* name, int length) noexcept nogil

# A process's memory of what the tables said about the names it saw last (see classify/_classify.pyx).
cdef enum:
    CACHED_NAME_BYTES = 48       # a longer name takes both entries of its set
    CACHED_LONG_NAME_BYTES = 112 # longer names are not cached
    CACHED_VALUE_BYTES = 7
    CACHED_MATCHES = 2           # a worker caches names with at most two listed suffixes
    CACHED_TABLE_SHIFT = 6       # a cached match: suffix index | table << 6 (a cached name has < 64 labels)
    CACHED_SUFFIX_MASK = 0x3F
    CACHED_CATEGORIES = 0        # the tables: categories', admin lists', overrides'
    CACHED_LISTS = 1
    CACHED_OVERRIDES = 2
    NAME_CACHE_NAMES = 65536     # a worker's name cache: 4 MB

cdef struct CachedName:          # one cache line
    uint64_t hash                # of the whole name; 0: an empty entry
    uint8_t length
    uint8_t value[CACHED_VALUE_BYTES]  # what the owner of the cache stores about the name
    uint8_t name[CACHED_NAME_BYTES]

cdef struct NameCache:
    CachedName* entries          # set_mask + 1 sets of two, the newer first
    uint32_t set_mask
    uint64_t hits                # lookups answered from the cache, and not
    uint64_t misses
    bint empty                   # nothing stored since it was made or cleared

cdef int name_cache_init(NameCache* cache, uint32_t names) noexcept nogil
cdef void name_cache_free(NameCache* cache) noexcept nogil
cdef void name_cache_clear(NameCache* cache) noexcept nogil
cdef void name_cache_prefetch(const NameCache* cache, const uint8_t* name, int length) noexcept nogil
cdef int name_suffixes(const uint8_t* name, int length, int* starts) noexcept nogil


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

# What matched, most specific kind first: at equal tier a URL prefix beats a name, which
# beats a destination address.
cpdef enum MatchKind:
    MATCH_URL = 0
    MATCH_NAME = 1
    MATCH_ADDRESS = 2
    MATCH_NONE = 3

# One rule of one group on one list; overrides carry their validity window (Unix seconds).
cdef packed struct RuleEntry:
    uint8_t action
    uint8_t reserved
    uint16_t schedule            # index of the schedule bitmap, or ALWAYS
    uint32_t order               # the rule's position in its group; an override's id
    int64_t valid_from
    int64_t valid_until

cdef struct Decision:
    uint8_t action               # a RuleAction; NO_RULE: the group's default applies
    uint8_t tier
    uint8_t match_kind
    int32_t list_id
    int32_t matched              # name: start of the matched suffix; address/URL: prefix length
    int32_t specificity
    uint32_t order
    int32_t rule_entry

cdef struct AddressSets:
    uint32_t count
    const uint32_t* offsets
    const uint32_t* members      # list id << 8 | prefix length

cdef class DomainTable:
    cdef TableView view
    cdef object section
    cdef NameCache batch_names   # count_listed's name cache, made on its first call
    cdef uint8_t batch_call      # which call its entries belong to (1-255, then cleared)
    cdef check_region(self, uint64_t offset, uint64_t size, size_t length, str what)
    cdef validate(self, uint64_t blob_length)

cdef class AddressTable:
    cdef object section
    cdef uint32_t count
    cdef uint32_t width            # 4 or 16 bytes per start
    cdef const uint8_t* starts     # big-endian, width bytes each, strictly increasing
    cdef const uint32_t* values
    cdef uint32_t find(self, const uint8_t* address) noexcept nogil

cdef class Classifier:
    cdef object sections
    cdef DomainTable category_names
    cdef DomainTable list_names          # the lists image's: admin lists, ids from list_base
    cdef DomainTable override_names      # the policy image's: overrides
    cdef AddressTable category_v4, category_v6, list_v4, list_v6, clients_v4, clients_v6
    cdef AddressSets category_sets
    cdef AddressSets list_sets
    cdef int list_base                   # the lists image's list 0 is this list id
    cdef const uint32_t* rule_cells      # group x list -> [first, next first) in rule_entries
    cdef const RuleEntry* rule_entries
    cdef uint32_t rule_entry_count
    cdef const uint8_t* tiers
    cdef const uint8_t* schedules
    cdef size_t schedule_bytes
    cdef const uint64_t* client_macs     # sorted: mac << 16 | group
    cdef uint32_t client_mac_count
    cdef int* interface_groups           # ifindex -> group or -1
    cdef int interface_group_count
    cdef readonly int group_count
    cdef readonly int list_count
    cdef readonly int schedule_count
    cdef readonly int default_group
    cdef int64_t window_start_minute
    cdef int64_t window_minutes

    cdef check_references(self)
    cdef check_group_values(self, AddressTable table)
    cdef int group_for(self, const uint8_t* mac, int ifindex, const uint8_t* address, int width,
                       int* how) noexcept nogil
    cdef bint active(self, const RuleEntry* entry, int64_t now) noexcept nogil
    cdef void consider_list(self, int group, int list_id, uint8_t match_kind, int specificity, int matched,
                            int64_t now, Decision* best) noexcept nogil
    cdef void consider_name_set(self, const TableView* table, int set_id, int base, int group, bint full_name,
                                int specificity, int matched, int64_t now, Decision* best) noexcept nogil
    cdef void consider_address_set(self, const AddressSets* sets, uint32_t set_id, int base, int group,
                                   int64_t now, Decision* best) noexcept nogil
    cdef int name_sets(self, NameCache* cache, const uint8_t* name, int length, int* starts, int* override_sets,
                       int* list_sets, int* category_sets) noexcept nogil
    cdef Decision decide_flow(self, int group, const uint8_t* name, int length, const uint8_t* address,
                              int width, int64_t now, NameCache* cache) noexcept nogil
