"""Buffers that end at a PROT_NONE page: a read one byte past the end faults at once,
which makes over-reads in the fast path visible without a sanitizer build."""

from __future__ import annotations

import ctypes
import mmap

PAGE = mmap.PAGESIZE
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


class GuardedArena:
    """Reusable two-page (or larger) mapping; place() puts data flush against the guard page."""

    def __init__(self, data_pages: int = 8) -> None:
        self.size = data_pages * PAGE
        self.map = mmap.mmap(-1, self.size + PAGE)
        base = ctypes.addressof(ctypes.c_char.from_buffer(self.map))
        if _libc.mprotect(base + self.size, PAGE, 0) != 0:  # PROT_NONE
            raise OSError(ctypes.get_errno(), "mprotect failed")
        self.view = memoryview(self.map)

    def place(self, data: bytes) -> memoryview:
        if len(data) > self.size:
            data = data[: self.size]
        start = self.size - len(data)
        self.view[start:self.size] = data
        return self.view[start:self.size]
