"""The Arrow memory pool a publishing process allocates from.

A cycle allocates large and short-lived: decoded parts that are let go once
sorted, a whole table that is let go once encoded. pyarrow's default pool
on Linux (mimalloc) keeps much of what is freed, and what it keeps cannot
serve the allocations that come next from Python's own allocator (file
blocks, compressed frames), so the process's peak grows by what an earlier
step freed. Arrow's jemalloc pool hands freed memory back to the system:
a first publish of 1,000,000 records (121 MB of Arrow data) peaked at
about 546 MB with the default pool and 360 MB with jemalloc.

``combe publish`` makes jemalloc the process's default pool where pyarrow
has it; a library user chooses for their own process (``pa.set_memory_pool``).
"""

from __future__ import annotations

import logging
import os

import pyarrow as pa

log = logging.getLogger(__name__)


def prefer_jemalloc() -> bool:
    """Make Arrow's jemalloc pool the default, unless $ARROW_DEFAULT_MEMORY_POOL names one; False where this
    build of pyarrow has no jemalloc (then the default stays)."""
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return False
    try:
        pool = pa.jemalloc_memory_pool()
    except NotImplementedError:
        log.debug("pyarrow has no jemalloc pool; allocating from %s", pa.default_memory_pool().backend_name)
        return False
    pa.set_memory_pool(pool)
    return True
