/* The data path's hashes: ef_hash_seeded for names (the compiled policy image, the name
   sets) and ef_hash_flow for flow keys (the fast path's reassembly table, the worker's
   decided flows). Both 64-bit multiply-xorshift (splitmix64 constants) over 8-byte words;
   names seeded so a compile can pick another seed; never 0, which marks an empty slot.
   The last word is read with overlapping fixed-size loads instead of a variable-length
   copy (a libc call per name); the length is mixed in first, so that stays unambiguous. */
#ifndef EDUFILTER_HASH_H
#define EDUFILTER_HASH_H
#include <stdint.h>
#include <string.h>

static inline uint64_t ef_load64(const unsigned char* p) {
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

static inline uint32_t ef_load32(const unsigned char* p) {
    uint32_t w;
    memcpy(&w, p, 4);
    return w;
}

static inline uint64_t ef_hash_seeded(const void* data, size_t n, uint64_t seed) {
    const unsigned char* p = (const unsigned char*)data;
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ seed ^ ((uint64_t)n * 0xD6E8FEB86659FD93ULL), w;
    size_t left = n;
    while (left > 8) {
        h = (h ^ ef_load64(p)) * 0xBF58476D1CE4E5B9ULL;
        h ^= h >> 31;
        p += 8;
        left -= 8;
    }
    if (n >= 8)
        w = ef_load64((const unsigned char*)data + n - 8);
    else if (n >= 4)
        w = ((uint64_t)ef_load32(p) << 32) | ef_load32(p + n - 4);
    else if (n > 0)
        w = ((uint64_t)p[0] << 16) | ((uint64_t)p[n >> 1] << 8) | p[n - 1];
    else
        w = 0;
    h = (h ^ w) * 0x94D049BB133111EBULL;
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ULL;
    h ^= h >> 32;
    return h ? h : 1;
}

static inline uint64_t ef_hash_bytes(const void* data, size_t n) {
    return ef_hash_seeded(data, n, 0);
}

/* The hash of a flow: its small fields (version, protocol, ports) packed into one word by
   the caller, then both 16-byte addresses as words; never 0. Read field by field, at the
   widths a flow key was just written with: a wider load over several narrower stores would
   wait for them to retire (no store forwarding), a stall per packet. */
static inline uint64_t ef_hash_flow(uint64_t fields, const unsigned char* src, const unsigned char* dst) {
    uint64_t h = fields * 0x9E3779B97F4A7C15ULL, words[4];
    int i;
    memcpy(words, src, 8);
    memcpy(words + 1, src + 8, 8);
    memcpy(words + 2, dst, 8);
    memcpy(words + 3, dst + 8, 8);
    for (i = 0; i < 4; i++)
        h = (h ^ (h >> 31) ^ words[i]) * 0xBF58476D1CE4E5B9ULL;
    h ^= h >> 29;
    h *= 0x94D049BB133111EBULL;
    h ^= h >> 32;
    return h ? h : 1;
}
#endif
