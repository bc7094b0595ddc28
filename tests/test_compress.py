"""Compressed data frames: the sender's per-frame choice, the receiver's safe unpacking, and
the negotiation in ``hello`` (pure: no I/O)."""

from __future__ import annotations

import os

import pytest

from p2pcp import compress as c
from p2pcp import protocol as p
from p2pcp.compress import zstd
from p2pcp.errors import ProtocolError

TEXT = b"".join(b"line %d: the quick brown fox jumps over the lazy dog\n" % i for i in range(6000))
FRAME = 256_000


def test_text_goes_compressed_and_comes_back_whole() -> None:
    packer = c.Packer()
    data = TEXT[:FRAME]
    packed = packer.pack(data)
    assert packed is not None and len(packed) < len(data) // 4
    assert c.unpack(packed, p.MAX_DATA_SIZE) == data
    assert (packer.raw, packer.packed) == (len(data), len(packed))


def test_small_frames_go_raw() -> None:
    assert c.Packer().pack(b"a" * (c.MIN_SIZE - 1)) is None
    assert c.Packer().pack(b"a" * c.MIN_SIZE) is not None


def test_incompressible_frames_back_off_then_try_again(monkeypatch: pytest.MonkeyPatch) -> None:
    packer = c.Packer()
    noise = os.urandom(FRAME)
    tried: list[int] = []
    calls = 0
    real = zstd.compress

    def counting(data: bytes, level: int) -> bytes:
        nonlocal calls
        calls += 1
        return real(data, level)

    monkeypatch.setattr(c.zstd, "compress", counting)
    for frame in range(200):
        before = calls
        assert packer.pack(noise) is None
        if calls > before:
            tried.append(frame)
    # Tries at 0, then after skipping 1, 2, 4, ... 64 frames, and every 65th from then on.
    assert tried == [0, 2, 5, 10, 19, 36, 69, 134, 199]
    # Compressible data after noise is taken up again at the next try, and resets the pace.
    assert packer.pack(TEXT[:FRAME]) is None  # still skipping after the try at 199
    while packer.pack(TEXT[:FRAME]) is None:
        pass
    before = calls
    assert packer.pack(noise) is None and calls == before + 1
    assert packer.pack(TEXT[:FRAME]) is None and calls == before + 1  # skips one
    assert packer.pack(TEXT[:FRAME]) is not None
    assert packer.raw == 2 * FRAME


def _streamed(data: bytes) -> bytes:
    """A zstd frame written as a stream: it does not say its size."""
    compressor = zstd.ZstdCompressor()
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    ("packed", "message"),
    [
        (b"not zstd at all", "malformed compressed frame"),
        (zstd.compress(TEXT[:FRAME])[:-5], "does not match its size"),
        (zstd.compress(b"\0" * (p.MAX_DATA_SIZE + 1)), "larger than a data frame"),
        (_streamed(TEXT[:1000]), "does not say its size"),
        (zstd.compress(TEXT[:1000]) + zstd.compress(TEXT[:1000]), "does not match its size"),
    ],
    ids=["garbage", "truncated", "bomb", "no-size", "two-frames"],
)
def test_unpack_refuses_what_a_data_frame_cannot_be(packed: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        c.unpack(packed, p.MAX_DATA_SIZE)


def test_a_frame_declaring_a_huge_window_is_refused_before_allocating() -> None:
    # 512 KiB of content (over the limit) with a 128 MiB window: refused by the declared size.
    big = zstd.compress(b"x" * (512 * 1024), options={zstd.CompressionParameter.window_log: 27})
    with pytest.raises(ProtocolError, match="larger than a data frame"):
        c.unpack(big, p.MAX_DATA_SIZE)


class Pair:
    def __init__(self, sender_zstd: bool, receiver_zstd: bool) -> None:
        self.sender = p.Peer(p.Role.SENDER, sender_zstd)
        self.receiver = p.Peer(p.Role.RECEIVER, receiver_zstd)
        to_receiver = self.sender.send(self.sender.hello())
        to_sender = self.receiver.send(self.receiver.hello())
        self.receiver.receive(to_receiver)
        self.sender.receive(to_sender)
        size = 3 * FRAME
        self.receiver.receive(self.sender.send(p.Offer((p.Entry("f", "file", size),))))
        self.sender.receive(self.receiver.send(p.Accept(size)))

    def data(self, data: bytes) -> tuple[int, p.Message]:
        frame = self.sender.send(p.Data(data))
        return frame[0], self.receiver.receive(frame)


@pytest.mark.parametrize(
    ("sender_zstd", "receiver_zstd", "kind"),
    [(True, True, p.KIND_ZSTD), (True, False, p.KIND_DATA), (False, True, p.KIND_DATA)],
)
def test_frames_are_compressed_only_when_both_hellos_say_zstd(
    sender_zstd: bool, receiver_zstd: bool, kind: int
) -> None:
    pair = Pair(sender_zstd, receiver_zstd)
    kinds, received = zip(*(pair.data(TEXT[:FRAME]) for _ in range(3)), strict=True)
    assert set(kinds) == {kind}
    assert all(m == p.Data(TEXT[:FRAME]) for m in received)
    # Credit is counted in file bytes, compressed or not: all of it is used up.
    assert pair.sender.credit == 0 and pair.receiver.credit == 0
    assert pair.receiver.files.moved == 3 * FRAME


def test_a_compressed_frame_nobody_agreed_to_is_a_protocol_error() -> None:
    pair = Pair(False, False)
    frame = bytes((p.KIND_ZSTD,)) + zstd.compress(TEXT[:FRAME])
    with pytest.raises(ProtocolError, match="did not offer"):
        pair.receiver.receive(frame)


def test_hello_without_compression_is_what_earlier_versions_sent() -> None:
    """The hello has kept its shape since version 1, and its `version` says 1 still (p2pcp before
    revisions refuses any other number): revisions 2 (no hashes from the receiver) and 3 (what
    is here compared before the receiver asks) and the optional fields (compress, keepalive)
    came beside it."""
    assert (
        p.encode(p.Peer(p.Role.SENDER).hello())
        == b'\x00{"type":"hello","protocol":"p2pcp","version":1,"revision":3,"keepalive":1}'
    )
    hello = p.encode(p.Peer(p.Role.SENDER, True).hello())
    assert hello == (
        b'\x00{"type":"hello","protocol":"p2pcp","version":1,"revision":3,"compress":["zstd"],'
        b'"keepalive":1}'
    )
    assert p.decode(hello) == p.Hello(3, ("zstd",), 1)
    # An earlier p2pcp's hello (no field) means no compression; unknown names are kept, unused.
    assert p.decode(b'\x00{"type":"hello","protocol":"p2pcp","version":1}') == p.Hello(1, ())
    assert p.decode(b'\x00{"type":"hello","protocol":"p2pcp","version":1,"compress":["lz9"]}') == (
        p.Hello(1, ("lz9",))
    )


@pytest.mark.parametrize("field", ['"zstd"', "[1]", "{}", "null"])
def test_a_malformed_compress_field_is_a_protocol_error(field: str) -> None:
    frame = b'\x00{"type":"hello","protocol":"p2pcp","version":1,"compress":%s}' % field.encode()
    with pytest.raises(ProtocolError, match="'compress'"):
        p.decode(frame)
