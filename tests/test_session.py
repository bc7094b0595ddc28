"""FileSender and FileReceiver over an in-memory frame channel (no network)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from p2pcp import patience, receiving, transfer
from p2pcp import protocol as p
from p2pcp.errors import PeerError, ProtocolError, RefusedError, TransferError
from p2pcp.events import Event, FileDone, Finished, OfferReceived
from p2pcp.output import OutputDir
from p2pcp.sources import build_sources


class Link:
    """Two in-memory channel ends; records the most bytes ever queued towards the receiver."""

    def __init__(self, max_message: int = 65536) -> None:
        self.to_receiver: asyncio.Queue[bytes] = asyncio.Queue()
        self.to_sender: asyncio.Queue[bytes] = asyncio.Queue()
        self.queued = 0
        self.peak = 0
        self.max_message = max_message
        self.receiver_delay = 0.0

    def sender_end(self) -> End:
        return End(self, self.to_receiver, self.to_sender, sender=True)

    def receiver_end(self) -> End:
        return End(self, self.to_sender, self.to_receiver, sender=False)


class End:
    def __init__(
        self, link: Link, out: asyncio.Queue[bytes], inbox: asyncio.Queue[bytes], sender: bool
    ) -> None:
        self.link, self.out, self.inbox, self.sender = link, out, inbox, sender
        self.last_sent = self.last_heard = time.monotonic()
        self.failure: Exception | None = None

    def fail(self, exc: Exception) -> None:
        self.failure = exc
        self.inbox.put_nowait(b"")  # wakes a reader, which raises

    @property
    def max_message(self) -> int:
        return self.link.max_message

    async def send(self, frame: bytes) -> None:
        assert len(frame) <= self.link.max_message
        if self.sender:
            self.link.queued += len(frame)
            self.link.peak = max(self.link.peak, self.link.queued)
        await self.out.put(frame)
        self.last_sent = time.monotonic()

    async def recv(self) -> bytes:
        frame = await self.inbox.get()
        if self.failure is not None:
            raise self.failure
        self.last_heard = time.monotonic()
        if not self.sender:
            self.link.queued -= len(frame)
            if self.link.receiver_delay:
                await asyncio.sleep(self.link.receiver_delay)
        return frame


class Sink:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)


async def _accept(offer: OfferReceived) -> bool:
    return True


async def _decline(offer: OfferReceived) -> bool:
    return False


def _transfer(
    link: Link, paths: list[str], out: Path, decide: transfer.Decide = _accept
) -> tuple[Sink, Sink, list[BaseException | None]]:
    send_sink, recv_sink = Sink(), Sink()

    async def main() -> list[BaseException | None]:
        sources = build_sources(paths, lambda _: None)
        output = OutputDir(str(out), overwrite=False)
        sender = transfer.FileSender(link.sender_end(), sources, send_sink)
        receiver = receiving.FileReceiver(link.receiver_end(), output, recv_sink, decide)
        results = await asyncio.gather(sender.run(), receiver.run(), return_exceptions=True)
        output.close()
        return list(results)

    return send_sink, recv_sink, asyncio.run(main())


def _against_receiver(
    peer: Callable[[End], Awaitable[object]], out: Path
) -> tuple[object, BaseException | None]:
    """Run a scripted sender against a real FileReceiver writing into ``out``."""

    async def main() -> list[object]:
        link = Link()
        output = OutputDir(str(out), overwrite=False)
        receiver = receiving.FileReceiver(link.receiver_end(), output, Sink(), _accept)
        return list(
            await asyncio.gather(peer(link.sender_end()), receiver.run(), return_exceptions=True)
        )

    answer, error = asyncio.run(main())
    assert error is None or isinstance(error, BaseException)
    return answer, error


def test_transfer_over_memory(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a").write_bytes(os.urandom(300_000))
    (src / "b").write_bytes(b"")
    out = tmp_path / "out"
    out.mkdir()
    send_sink, recv_sink, results = _transfer(Link(), [str(src)], out)
    assert results == [None, None]
    assert (out / "src" / "sub" / "a").read_bytes() == (src / "sub" / "a").read_bytes()
    assert (out / "src" / "b").read_bytes() == b""
    done = [e for e in recv_sink.events if isinstance(e, FileDone)]
    assert [d.path for d in done] == ["src/b", "src/sub/a"]
    assert done[1].sha256 == hashlib.sha256((src / "sub" / "a").read_bytes()).hexdigest()
    assert not any(isinstance(e, Finished) for e in send_sink.events)  # emitted by send() only


def test_slow_receiver_slows_the_sender(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(receiving, "CREDIT_WINDOW", 256 * 1024)
    (tmp_path / "big").write_bytes(os.urandom(3 * 1024 * 1024))
    out = tmp_path / "out"
    out.mkdir()
    link = Link(max_message=16 * 1024)
    link.receiver_delay = 0.0005
    _, _, results = _transfer(link, [str(tmp_path / "big")], out)
    assert results == [None, None]
    assert (out / "big").read_bytes() == (tmp_path / "big").read_bytes()
    # Never more than the credit window (plus control frames) in flight, whatever the file size.
    assert link.peak <= 256 * 1024 + 4096


def test_decline_reaches_the_sender(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    out = tmp_path / "out"
    out.mkdir()
    _, _, results = _transfer(Link(), [str(tmp_path / "f")], out, decide=_decline)
    assert isinstance(results[0], RefusedError) and "declined" in results[0].message
    assert isinstance(results[1], RefusedError)
    assert list(out.iterdir()) == []


def test_unsafe_offer_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()

    async def hostile_sender(end: End) -> p.Message:
        peer = p.Peer(p.Role.SENDER)
        await end.send(peer.send(p.Hello()))
        peer.receive(await end.recv())
        await end.send(peer.send(p.Offer((p.Entry("../escape", "file", 1),))))
        return peer.receive(await end.recv())

    answer, error = _against_receiver(hostile_sender, out)
    assert isinstance(answer, p.Decline) and answer.reason == "unsafe"
    assert isinstance(error, TransferError) and "'..'" in error.message
    assert list(out.iterdir()) == []
    assert not (tmp_path / "escape").exists()


def test_corrupted_data_is_caught_and_removed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()

    async def lying_sender(end: End) -> None:
        peer = p.Peer(p.Role.SENDER)
        await end.send(peer.send(p.Hello()))
        peer.receive(await end.recv())
        await end.send(peer.send(p.Offer((p.Entry("f", "file", 3),))))
        peer.receive(await end.recv())  # accept: data follows at once (version 3)
        await end.send(peer.send(p.Data(b"abc")))
        await end.send(peer.send(p.FileEnd(0, hashlib.sha256(b"xyz").hexdigest())))

    _, error = _against_receiver(lying_sender, out)
    assert isinstance(error, TransferError) and "SHA-256 mismatch" in error.message
    assert list(out.iterdir()) == []


def test_peer_abort_is_reported(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")

    async def aborting_receiver(end: End) -> None:
        peer = p.Peer(p.Role.RECEIVER)
        await end.send(peer.send(p.Hello()))
        peer.receive(await end.recv())
        await end.send(peer.send(p.Abort("cancelled")))

    async def main() -> list[object]:
        link = Link()
        sender = transfer.FileSender(
            link.sender_end(), build_sources([str(tmp_path / "f")], print), Sink()
        )
        return list(
            await asyncio.gather(
                sender.run(), aborting_receiver(link.receiver_end()), return_exceptions=True
            )
        )

    error, _ = asyncio.run(main())
    assert isinstance(error, PeerError) and error.message == "the peer cancelled the transfer"


def test_out_of_order_frame_from_peer(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()

    async def rude_sender(end: End) -> None:
        await end.send(p.encode(p.Hello()))
        await end.recv()
        await end.send(p.encode(p.Data(b"no offer yet")))

    _, error = _against_receiver(rude_sender, out)
    assert isinstance(error, ProtocolError) and "'data' while await-offer" in error.message


def test_a_stalling_peer_is_given_up_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(patience, "IDLE_TIMEOUT", 0.5)
    out = tmp_path / "out"
    out.mkdir()

    async def stalling_sender(end: End) -> None:
        peer = p.Peer(p.Role.SENDER)
        await end.send(peer.send(p.Hello()))
        peer.receive(await end.recv())
        await end.send(peer.send(p.Offer((p.Entry("f", "file", 10),))))
        peer.receive(await end.recv())  # accept: data follows at once (version 3)
        await end.send(peer.send(p.Data(b"abc")))
        await asyncio.sleep(3)  # then nothing: connection alive, no data

    _, error = _against_receiver(stalling_sender, out)
    assert isinstance(error, PeerError) and "sent nothing for" in error.message
    # A peer that went quiet may come back in a later run: its 3 bytes are kept to resume.
    assert [p.name for p in out.iterdir()] == [".f.p2pcp-part"]
    assert (out / ".f.p2pcp-part").read_bytes() == b"abc"
