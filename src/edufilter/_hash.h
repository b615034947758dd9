/* One hash for the whole data path: flow keys in the fast path and names in the
   compiled policy image. 64-bit multiply-xorshift (splitmix64 constants) over bytes,
   seeded so a compile can pick another seed; never 0, which marks an empty slot. */
#ifndef EDUFILTER_HASH_H
#define EDUFILTER_HASH_H
#include <stdint.h>
#include <string.h>

static inline uint64_t ef_hash_seeded(const void* data, size_t n, uint64_t seed) {
    const unsigned char* p = (const unsigned char*)data;
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ seed ^ ((uint64_t)n * 0xD6E8FEB86659FD93ULL), w;
    while (n >= 8) {
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xBF58476D1CE4E5B9ULL;
        h ^= h >> 31;
        p += 8;
        n -= 8;
    }
    w = 0;
    memcpy(&w, p, n);
    h = (h ^ w) * 0x94D049BB133111EBULL;
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ULL;
    h ^= h >> 32;
    return h ? h : 1;
}

static inline uint64_t ef_hash_bytes(const void* data, size_t n) {
    return ef_hash_seeded(data, n, 0);
}
#endif
