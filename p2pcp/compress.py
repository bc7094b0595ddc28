"""Zstandard compression of data frames: deciding per frame, and unpacking safely.

The sender tries each data frame at zstd level 1 and sends the smaller form only when it saves
at least one sixteenth. zstd gives up on incompressible input quickly (about 5 GB/s here on
random bytes, against 500 MB/s compressing source code), and after a frame that did not shrink
the sender also skips the next 1, 2, 4 ... 64 frames before trying again, so a video or an
archive costs almost nothing. The receiver refuses a frame that does not say its size, says more
than a data frame may hold, needs a window over 1 MiB, or holds anything after its one zstd
frame: a peer cannot make it allocate more than a data frame's worth.

The stdlib module (``compression.zstd``, Python 3.14) and its backport (``backports.zstd``) are
the same code; this module is the only place that imports either.
"""

from __future__ import annotations

import sys

from .errors import ProtocolError

if sys.version_info >= (3, 14):
    from compression import zstd as zstd
else:
    from backports import zstd as zstd

ZSTD = "zstd"
LEVEL = 1
MIN_SIZE = 512
"""Frames smaller than this go as they are: there is too little to gain."""
MAX_SKIP = 64
WINDOW_LOG_MAX = 20


class Packer:
    """The sender's choice for each frame: compressed when it pays, raw otherwise."""

    def __init__(self) -> None:
        self._skip = 0
        self._backoff = 1
        self.raw = 0
        """File bytes sent in compressed frames."""
        self.packed = 0
        """What those frames carried instead."""

    def pack(self, data: bytes) -> bytes | None:
        """``data`` compressed, or None when it should go raw."""
        if len(data) < MIN_SIZE:
            return None
        if self._skip:
            self._skip -= 1
            return None
        packed = zstd.compress(data, LEVEL)
        if len(packed) <= len(data) - len(data) // 16:
            self._backoff = 1
            self.raw += len(data)
            self.packed += len(packed)
            return packed
        self._skip = self._backoff
        self._backoff = min(self._backoff * 2, MAX_SKIP)
        return None


def unpack(packed: bytes, limit: int) -> bytes:
    """The bytes of one zstd frame of at most ``limit`` bytes; ProtocolError for anything else."""
    try:
        size = zstd.get_frame_info(packed).decompressed_size
    except zstd.ZstdError:
        raise ProtocolError("peer sent a malformed compressed frame") from None
    if size is None:
        raise ProtocolError("peer sent a compressed frame that does not say its size")
    if size > limit:
        raise ProtocolError("peer sent a compressed frame larger than a data frame")
    decompressor = zstd.ZstdDecompressor(
        options={zstd.DecompressionParameter.window_log_max: WINDOW_LOG_MAX}
    )
    try:
        data = decompressor.decompress(packed, max_length=size)
    except zstd.ZstdError:
        raise ProtocolError("peer sent a malformed compressed frame") from None
    if len(data) != size or not decompressor.eof or decompressor.unused_data:
        raise ProtocolError("peer sent a compressed frame whose content does not match its size")
    return data
