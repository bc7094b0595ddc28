"""Names, sources and the receiver's safe writing (real files in a temporary directory)."""

from __future__ import annotations

import hashlib
import os
import posixpath
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pcp.errors import LocalWriteError, RefusedError, TransferError, UnsafeOfferError, UsageError
from p2pcp.escape import show
from p2pcp.names import name_problem, validate_entries
from p2pcp.output import OutputDir
from p2pcp.protocol import Entry
from p2pcp.sources import build_sources
from p2pcp.writers import free_name


def _file(path: str, size: int = 1) -> Entry:
    return Entry(path, "file", size)


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("", "empty name"),
        ("/etc/passwd", "absolute"),
        ("../x", "'..'"),
        ("a/../../x", "'..'"),
        ("a/./b", "'.'"),
        ("a//b", "empty path component"),
        ("a/", "empty path component"),
        ("a\\..\\b", "backslash"),
        ("\\\\server\\share", "backslash"),
        ("C:", "drive letter"),
        ("c:evil", "drive letter"),
        ("a\x00b", "control character"),
        ("a\x1b[2Jb", "control character"),
        ("a\rb", "control character"),
        ("x\u202egnp.exe", "control character"),
        ("\x85next", "control character"),
        ("CON", "reserved device"),
        ("dir/lpt1.txt", "reserved device"),
        ("nul .txt", "reserved device"),
        ("name.", "trailing dot"),
        ("name ", "trailing dot or space"),
        ("x" * 256, "too long"),
        ("\udc80", "control character"),
    ],
)
def test_unsafe_names(path: str, problem: str) -> None:
    found = name_problem(path)
    assert found is not None and problem in found


@pytest.mark.parametrize(
    "path",
    [
        "a",
        "a/b/c.txt",
        ".hidden",
        "with space.txt",
        "Ünïcødé/名前",
        "notes: 2024.txt",
        "a..b",
        "console.log",
        "x" * 255,
    ],
)
def test_safe_names(path: str) -> None:
    assert name_problem(path) is None


@given(st.text(min_size=1, max_size=60))
def test_accepted_names_never_leave_the_output_dir(path: str) -> None:
    if name_problem(path) is not None:
        return
    joined = posixpath.normpath(posixpath.join("/out", path))
    assert joined.startswith("/out/")
    assert ".." not in path.split("/") and not path.startswith("/")
    assert all(ord(c) >= 0x20 and c != "\x7f" for c in path)


@pytest.mark.parametrize(
    ("entries", "match"),
    [
        ([_file("a"), _file("a")], "named twice"),
        ([_file("Readme"), _file("README")], "named twice"),
        ([_file("caf\u00e9"), _file("cafe\u0301")], "named twice"),
        ([_file("d"), Entry("d", "dir")], "named twice"),
        ([_file("d"), _file("d/x")], "both a file and a directory"),
        ([_file("D"), _file("d/x")], "both a file and a directory"),
        ([_file("ok"), _file("../bad")], "'..'"),
    ],
)
def test_offer_level_collisions(entries: list[Entry], match: str) -> None:
    with pytest.raises(UnsafeOfferError, match=match):
        validate_entries(entries)


def test_show_escapes_terminal_controls() -> None:
    assert show("a\x1b[31mred\x07") == "a\\x1b[31mred\\x07"
    assert show("x\u202egnp") == "x\\u202egnp"
    assert show("ok.txt") == "ok.txt"


def test_build_sources_walks_and_skips_links(tmp_path: Path) -> None:
    root = tmp_path / "d"
    (root / "sub" / "empty").mkdir(parents=True)
    (root / "sub" / "f").write_text("x")
    (root / "run").write_text("x")
    (root / "run").chmod(0o755)
    os.symlink("/etc", root / "escape")
    os.mkfifo(root / "fifo")
    notices: list[str] = []
    sources = build_sources([str(root)], notices.append)
    entries = [(s.entry.path, s.entry.kind, s.entry.executable) for s in sources]
    assert entries == [
        ("d", "dir", False),
        ("d/run", "file", True),
        ("d/sub", "dir", False),
        ("d/sub/empty", "dir", False),
        ("d/sub/f", "file", False),
    ]
    assert any("symlink" in n and "escape" in n for n in notices)
    assert any("fifo" in n for n in notices)


def test_build_sources_rejects_clashing_names(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x").write_text("1")
    (tmp_path / "b" / "x").write_text("2")
    with pytest.raises(UsageError, match="two sources would arrive as x"):
        build_sources([str(tmp_path / "a" / "x"), str(tmp_path / "b" / "x")], print)
    with pytest.raises(UsageError, match="no such file"):
        build_sources([str(tmp_path / "missing")], print)


def _write(out: OutputDir, entry: Entry, data: bytes, digest: str | None = None) -> str:
    writer = out.open_file(entry)
    writer.write(data)
    return writer.finish(digest or hashlib.sha256(data).hexdigest())


def test_writes_verify_and_apply_only_the_executable_bit(tmp_path: Path) -> None:
    out = OutputDir(str(tmp_path), overwrite=False)
    entries = [Entry("d", "dir"), Entry("d/tool", "file", 3, True)]
    out.check(entries)
    out.make_dir("d")
    _write(out, entries[1], b"abc")
    mode = (tmp_path / "d" / "tool").stat().st_mode
    assert mode & 0o111 and not mode & 0o6000
    assert (tmp_path / "d" / "tool").read_bytes() == b"abc"
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["tool"]


def test_hash_mismatch_leaves_nothing(tmp_path: Path) -> None:
    out = OutputDir(str(tmp_path), overwrite=False)
    with pytest.raises(TransferError, match="SHA-256 mismatch"):
        _write(out, _file("f", 3), b"abc", "0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_a_file_in_place_is_no_refusal_but_is_found_as_existing(tmp_path: Path) -> None:
    """Conflicts are decided per file (conflicts.py), not by refusing the whole offer; a
    directory where a file goes is still refused."""
    (tmp_path / "f").write_text("precious")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "g").write_text("x")
    out = OutputDir(str(tmp_path), overwrite=False)
    offer = [_file("f"), _file("new"), Entry("d", "dir"), _file("d/g"), Entry("t", "text", 1)]
    out.check(offer)
    assert out.existing(offer) == {0, 2}  # file indices: f, new, d/g, t
    with pytest.raises(RefusedError, match="not a regular file"):
        out.check([_file("d")])


def test_rename_puts_the_new_file_beside_the_one_in_place(tmp_path: Path) -> None:
    (tmp_path / "photo.jpg").write_text("mine")
    (tmp_path / "photo (1).jpg").write_text("mine too")
    out = OutputDir(str(tmp_path), overwrite=False)
    writer = out.open_file(_file("photo.jpg", 3), conflict="rename")
    assert writer.placed_as == "photo (2).jpg"
    writer.write(b"new")
    writer.finish(hashlib.sha256(b"new").hexdigest())
    assert (tmp_path / "photo.jpg").read_text() == "mine"
    assert (tmp_path / "photo (1).jpg").read_text() == "mine too"
    assert (tmp_path / "photo (2).jpg").read_text() == "new"


def test_two_transfers_of_one_name_at_once_keep_both(tmp_path: Path) -> None:
    """listen, two devices sending big.bin at the same moment: the second does not remove or
    reuse the first one's partial (it is locked while written), but writes its own under the
    next free name; each file ends up whole."""
    first_out = OutputDir(str(tmp_path), overwrite=False)
    second_out = OutputDir(str(tmp_path), overwrite=False)
    first = first_out.open_file(_file("big.bin", 5))
    first.write(b"fir")
    second = second_out.open_file(_file("big.bin", 6))
    assert second.placed_as == "big (1).bin"
    second.write(b"second")
    first.write(b"st")
    second.finish(hashlib.sha256(b"second").hexdigest())
    first.finish(hashlib.sha256(b"first").hexdigest())
    assert (tmp_path / "big.bin").read_bytes() == b"first"
    assert (tmp_path / "big (1).bin").read_bytes() == b"second"
    assert not list(tmp_path.glob(".*p2pcp-part"))


def test_under_rename_a_file_that_appears_meanwhile_is_kept_and_the_new_one_goes_beside(
    tmp_path: Path,
) -> None:
    out = OutputDir(str(tmp_path), overwrite=False)
    writer = out.open_file(_file("big.bin", 3), conflict="rename-if-taken")
    writer.write(b"new")
    (tmp_path / "big.bin").write_bytes(b"theirs")  # another transfer finished first
    writer.finish(hashlib.sha256(b"new").hexdigest())
    assert writer.placed_as == "big (1).bin"
    assert (tmp_path / "big.bin").read_bytes() == b"theirs"
    assert (tmp_path / "big (1).bin").read_bytes() == b"new"
    # Without it, nothing that appeared is replaced, and nothing is put beside it either.
    plain = out.open_file(_file("doc.txt", 3))
    plain.write(b"new")
    (tmp_path / "doc.txt").write_bytes(b"theirs")
    with pytest.raises(RefusedError, match="appeared during the transfer"):
        plain.finish(hashlib.sha256(b"new").hexdigest())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big (1).bin", "big.bin", "doc.txt"]


def test_a_partial_replaced_under_a_writer_is_never_put_in_place(tmp_path: Path) -> None:
    out = OutputDir(str(tmp_path), overwrite=False)
    writer = out.open_file(_file("doc.txt", 4))
    writer.write(b"mine")
    part = tmp_path / ".doc.txt.p2pcp-part"
    part.unlink()
    part.write_bytes(b"planted")
    with pytest.raises(LocalWriteError, match="was replaced"):
        writer.finish(hashlib.sha256(b"mine").hexdigest())
    assert not (tmp_path / "doc.txt").exists()
    assert part.read_bytes() == b"planted"  # not ours: left alone


def test_overwrite_replaces_only_the_file_it_was_chosen_for(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("old a")
    (tmp_path / "b").write_text("old b")
    out = OutputDir(str(tmp_path), overwrite=False)
    for name, conflict in (("a", "overwrite"), ("b", "")):
        writer = out.open_file(_file(name, 3), conflict=conflict)
        writer.write(b"new")
        if conflict:
            writer.finish(hashlib.sha256(b"new").hexdigest())
        else:
            with pytest.raises(RefusedError, match="nothing was overwritten"):
                writer.finish(hashlib.sha256(b"new").hexdigest())
    assert (tmp_path / "a").read_text() == "new"
    assert (tmp_path / "b").read_text() == "old b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


@pytest.mark.parametrize(
    ("name", "free"),
    [("notes.txt", "notes (1).txt"), (".bashrc", ".bashrc (1)"), ("x.tar.gz", "x.tar (1).gz")],
)
def test_free_names_keep_the_suffix(tmp_path: Path, name: str, free: str) -> None:
    (tmp_path / name).write_text("here")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert free_name(fd, name) == free
        long = "é" * 127 + ".bin"  # 258 bytes: the number still fits in 255
        assert len(free_name(fd, long).encode()) <= 255
    finally:
        os.close(fd)


def test_file_that_appears_during_the_transfer_is_not_clobbered(tmp_path: Path) -> None:
    out = OutputDir(str(tmp_path), overwrite=False)
    out.check([_file("f", 3)])
    writer = out.open_file(_file("f", 3))
    writer.write(b"new")
    (tmp_path / "f").write_text("appeared")
    with pytest.raises(RefusedError, match="appeared"):
        writer.finish(hashlib.sha256(b"new").hexdigest())
    assert (tmp_path / "f").read_text() == "appeared"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_never_writes_through_a_symlink_in_the_output_dir(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    os.symlink(outside, out_dir / "link")
    os.symlink(outside / "target", out_dir / "file-link")
    out = OutputDir(str(out_dir), overwrite=True)
    with pytest.raises(UnsafeOfferError, match="symlink"):
        out.check([_file("link/x")])
    with pytest.raises(UnsafeOfferError, match="symlink"):
        out.check([_file("file-link")])
    # Even if a link is raced in after the check, writing refuses to follow it.
    with pytest.raises(UnsafeOfferError, match="symlink"):
        _write(out, _file("link/x"), b"x")
    assert list(outside.iterdir()) == []


def test_existing_dir_where_a_file_goes(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    with pytest.raises(RefusedError, match="not a regular file"):
        OutputDir(str(tmp_path), overwrite=True).check([_file("x")])
    (tmp_path / "y").write_text("")
    with pytest.raises(RefusedError, match="not a directory"):
        OutputDir(str(tmp_path), overwrite=True).check([_file("y/z")])


def test_offer_larger_than_free_space_is_refused(tmp_path: Path) -> None:
    out = OutputDir(str(tmp_path), overwrite=False)
    with pytest.raises(LocalWriteError, match="not enough space"):
        out.check([_file("huge", out.free_bytes() + 1)])
    assert list(tmp_path.iterdir()) == []


def test_missing_output_dir_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        OutputDir(str(tmp_path / "nope"), overwrite=False)
