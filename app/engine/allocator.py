"""Keep the memory a forward pass frees for the next one, instead of handing it back to the kernel.

glibc's malloc serves a block of more than its mmap threshold with a fresh mapping and unmaps it on free; once such
a block is freed it raises the threshold to that size and its trim threshold to twice that. For a CNN's forward pass
(feature maps of 0.1–13 MB, most freed by the end) that leaves a trim threshold of a few MB, so the memory freed
after each pass is given back and every page of the next pass is faulted in and zeroed again: about 3,500 page
faults and a quarter of EfficientNet-Lite0's 16 ms pass on this machine (``docs/performance.md``).

Fixed thresholds keep the blocks in the heap and the freed pages in the process. What stays resident is bounded by
the largest working set each thread has seen, plus up to ``_TRIM_THRESHOLD`` of free memory on the main thread's heap.

A top pad of a whole heap keeps the heaps themselves. Each thread that allocates gets an arena of its own, made of
heaps of at most 64 MB, and glibc unmaps such a heap once all of it is free unless more than the top pad would be
left (``heap_trim`` compares with the pad, not the trim threshold). Depending on where a server's long-lived blocks
happened to land, a worker thread's forward pass then mapped and unmapped its memory on every pass: 1,564 munmap and
785 mmap calls in 79 analyses, 1,600 page faults an analysis, in a third to a half of server starts.

Memory the process has never touched still costs a fault per page on first use, and the analysis store keeps every
analysis's maps until its budget is full: 1,550–1,740 faults an analysis, 2–10 ms on this virtual machine
depending on the host. ``prefault_heap`` pays that once, at start-up.
"""

from __future__ import annotations

import ctypes
import logging
import sys

logger = logging.getLogger(__name__)

# mallopt parameters from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
# The largest mmap threshold glibc accepts on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX): VGG16's 12.8 MB maps stay below.
_MMAP_THRESHOLD = 32 * 1024 * 1024
_TRIM_THRESHOLD = 128 * 1024 * 1024
# A thread arena's largest heap on 64-bit (HEAP_MAX_SIZE). The pad is address space asked for ahead, not memory:
# pages count only once touched.
_TOP_PAD = 64 * 1024 * 1024
# Below the mmap threshold, so that each piece comes from the arena's heaps, which the top pad keeps.
_PREFAULT_PIECE = 4 * 1024 * 1024

_kept = False


def keep_freed_memory() -> bool:
    """Fix glibc's malloc thresholds and top pad for this process (once; later calls do nothing). False where the C
    library is not glibc (musl, macOS), which is left as it is."""
    global _kept
    if _kept:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        # The symbols the interpreter is linked with, its C library's among them; no search for the library file.
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # a C library without mallopt (musl)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    # mallopt answers 1 on success; a C library that has the symbol but refuses the values keeps its own.
    settings = ((_M_MMAP_THRESHOLD, _MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD), (_M_TOP_PAD, _TOP_PAD))
    _kept = all(mallopt(option, value) for option, value in settings)
    if not _kept:
        logger.warning("the C library refused fixed malloc settings; forward passes will fault their memory in")
    return _kept


def prefault_heap(nbytes: int) -> int:
    """Touch about ``nbytes`` of memory in the calling thread's malloc arena and free it again, to malloc and not to
    the kernel, so that what this thread allocates and keeps later lands on pages already resident.

    Only under ``keep_freed_memory``; otherwise the freed pieces would go straight back. Each thread allocates from
    an arena of its own, so call it on the thread that will allocate. Returns the bytes touched.
    """
    if not _kept or nbytes <= 0:
        return 0
    # bytearray zero-fills what malloc gives it: every page is written once. All are held until the last is touched,
    # or each piece would reuse the one freed before it.
    pieces = [bytearray(_PREFAULT_PIECE) for _ in range(-(-nbytes // _PREFAULT_PIECE))]
    touched = len(pieces) * _PREFAULT_PIECE
    del pieces
    return touched
