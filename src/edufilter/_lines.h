/* Memory in whole cache lines: a table whose entries are 64 bytes then has each entry in
   exactly one line (a remembered flow, a cached name). */
#ifndef EDUFILTER_LINES_H
#define EDUFILTER_LINES_H
#include <stdlib.h>
#include <string.h>

/* calloc, 64-byte aligned; NULL when out of memory or count * size overflows */
static void* ef_calloc_lines(size_t count, size_t size) {
    void* memory = NULL;
    if (size && count > ((size_t)-1) / size)
        return NULL;
    if (posix_memalign(&memory, 64, count * size) != 0)
        return NULL;
    memset(memory, 0, count * size);
    return memory;
}
#endif
