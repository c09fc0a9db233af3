"""Near-live clustering during acquisition: frame sources (Merlin TCP, growing .mib, iterables).

See :mod:`gpu4d.live.sources`.
"""

from gpu4d.live.sources import (
    FrameBatch,
    FrameSource,
    GrowingMibSource,
    IterableSource,
    MerlinTCPSource,
    StreamIncomplete,
    open_source,
)

__all__ = [
    "FrameBatch",
    "FrameSource",
    "GrowingMibSource",
    "IterableSource",
    "MerlinTCPSource",
    "StreamIncomplete",
    "open_source",
]
