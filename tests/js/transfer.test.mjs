// The page's data-channel protocol (signal_server/web/transfer.js) under node: the page's sender
// against the page's receiver over an in-memory channel pair, and each against a scripted peer
// that speaks as the CLI does (docs/protocol.md section 4). The CLI itself against the page runs
// in tests/test_browser.py.
import assert from "node:assert/strict";
import { randomBytes, createHash, webcrypto } from "node:crypto";
import { test } from "node:test";

globalThis.crypto ??= webcrypto;

import * as p2pcp from "../../signal_server/web/p2pcp.js";
import { CREDIT_WINDOW, SEND_LOW_WATER } from "../../signal_server/web/constants.js";
import {
  Declined,
  Inbox,
  PeerFault,
  UserError,
  abortOnError,
  receiveFiles,
  sendFiles,
  shown,
} from "../../signal_server/web/transfer.js";

/** One end of an in-memory data channel: frames reach the other end's inbox in order. */
class End extends EventTarget {
  constructor() {
    super();
    this.inbox = new Inbox();
    this.peer = null;
    this.bufferedAmount = 0;
    this.bufferedAmountLowThreshold = 0;
    this.readyState = "open";
    this.sent = []; // every frame, parsed, for the checks
    this.tamper = (frame) => frame;
  }
  send(frame) {
    try {
      this.sent.push(p2pcp.parseFrame(frame));
    } catch {
      this.sent.push({ raw: frame }); // a malformed frame a scripted peer sends on purpose
    }
    const copy = this.tamper(frame.slice());
    setImmediate(() => this.peer.inbox.push(copy));
  }
}

function pair() {
  const a = new End();
  const b = new End();
  a.peer = b;
  b.peer = a;
  return [a, b];
}

const source = (name, bytes) => ({
  name,
  size: bytes.length,
  read: async (from, to) => bytes.slice(from, to),
});

const sendView = () => ({
  offered() {},
  started(total) {
    this.total = total;
  },
  sending() {},
  progress(done) {
    this.done = done;
  },
  finishing() {},
});

function receiveView(answer = true) {
  const view = {
    kept: new Map(),
    discarded: [],
    texts: [],
    offered: null,
    accept: async (entries) => {
      view.offered = entries;
      return answer;
    },
    started: (total) => {
      view.total = total;
    },
    receiving() {},
    progress: (moved) => {
      view.moved = moved;
    },
    open: async (entry) => {
      const parts = [];
      return {
        write: async (bytes) => {
          parts.push(Buffer.from(bytes));
        },
        keep: async () => {
          view.kept.set(entry.path, Buffer.concat(parts));
        },
        discard: () => view.discarded.push(entry.path),
      };
    },
    text: (text) => view.texts.push(text),
  };
  return view;
}

const sha = (bytes) => createHash("sha256").update(bytes).digest("hex");

/** A page sender of `data` as a.bin, facing a receiver scripted by the test up to its accept. */
async function toScripted(data, version, have) {
  const [sender, peer] = pair();
  const sending = sendFiles(sender, sender.inbox, [source("a.bin", data)], sendView());
  peer.send(p2pcp.controlFrame({ type: "hello", protocol: "p2pcp", version }));
  await peer.inbox.control("hello");
  await peer.inbox.control("offer");
  peer.send(p2pcp.controlFrame({ type: "accept", credit: CREDIT_WINDOW, have }));
  return { peer, sending };
}

/** The data frames up to the next control frame, joined, and that control frame. */
async function readUntilControl(inbox) {
  const parts = [];
  let frame;
  while ((frame = await inbox.next()).data) parts.push(frame.data);
  return { bytes: Buffer.concat(parts), control: frame.control };
}

test("page to page: two files arrive whole, past the credit window, and are verified", async () => {
  const [sender, receiver] = pair();
  const big = new Uint8Array(randomBytes(CREDIT_WINDOW + 3 * 65535 + 17)); // needs a credit grant
  const small = new Uint8Array(randomBytes(1000));
  const view = receiveView();
  const [, got] = await Promise.all([
    sendFiles(sender, sender.inbox, [source("big.bin", big), source("small.txt", small)], sendView()),
    receiveFiles(receiver, receiver.inbox, view),
  ]);
  assert.deepEqual(got, { verified: 2, moved: big.length + small.length });
  assert.equal(sha(view.kept.get("big.bin")), sha(big));
  assert.equal(sha(view.kept.get("small.txt")), sha(small));
  assert.deepEqual(view.discarded, []);
  assert.deepEqual(view.offered.map((e) => [e.path, e.kind, e.size]),
    [["big.bin", "file", big.length], ["small.txt", "file", 1000]]);
  const credits = receiver.sent.filter((f) => f.control && f.control.type === "credit");
  assert.ok(credits.length >= 1, "the receiver granted more credit");
  const ends = sender.sent.filter((f) => f.control && f.control.type === "file_end");
  assert.deepEqual(ends.map((f) => f.control.sha256), [sha(big), sha(small)]);
  assert.equal(sender.bufferedAmountLowThreshold, SEND_LOW_WATER);
});

test("the sender never runs past the credit it was given", async () => {
  const [sender, peer] = pair();
  const data = new Uint8Array(randomBytes(3 << 20));
  const sending = sendFiles(sender, sender.inbox, [source("a.bin", data)], sendView(), 1 << 16);
  sending.catch(() => {}); // ended below by the peer's abort
  peer.send(p2pcp.controlFrame({ type: "hello", protocol: "p2pcp", version: 1 }));
  const hello = await peer.inbox.control("hello");
  assert.equal(hello.version, 1); // what p2pcp before revisions accepts
  assert.equal(hello.revision, 2);
  await peer.inbox.control("offer");
  peer.send(p2pcp.controlFrame({ type: "accept", credit: 1 << 20, have: [] }));
  await peer.inbox.control("resume");
  let bytes = 0;
  for (let i = 0; i < 16; i++) bytes += (await peer.inbox.next()).data.length;
  assert.equal(bytes, 1 << 20);
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal(peer.inbox.queue.length, 0, "nothing beyond the credit was sent");
  peer.send(p2pcp.controlFrame({ type: "abort", reason: "cancelled", message: "" }));
  await assert.rejects(sending, (error) => error instanceof PeerFault
    && error.message === "the peer cancelled the transfer");
});

test("a resume after a matching prefix sends only the rest; a wrong prefix sends it all", async () => {
  const data = new Uint8Array(randomBytes(300_000));
  for (const [held, expect] of [[sha(data.slice(0, 100_000)), 100_000], ["00".repeat(32), 0]]) {
    const { peer, sending } = await toScripted(data, 1, [{ index: 0, size: 100_000, sha256: held }]);
    assert.deepEqual((await peer.inbox.control("resume")).offsets, [[0, expect]]);
    const { bytes, control } = await readUntilControl(peer.inbox);
    assert.equal(control.type, "file_end");
    assert.equal(control.sha256, sha(data), "the hash covers the whole file");
    assert.equal(sha(bytes), sha(data.slice(expect)));
    await peer.inbox.control("done");
    peer.send(p2pcp.controlFrame({ type: "verified", files: 1 }));
    await sending;
  }
});

test("version 2: the sender hashes its prefixes, the receiver's start decides", async () => {
  const data = new Uint8Array(randomBytes(300_000));
  for (const offset of [100_000, 0]) {
    const { peer, sending } = await toScripted(data, 2, [{ index: 0, size: 100_000 }]);
    const resume = await peer.inbox.control("resume");
    assert.deepEqual(resume.prefixes, [[0, 100_000, sha(data.slice(0, 100_000))]]);
    assert.deepEqual(resume.offsets, []);
    peer.send(p2pcp.controlFrame({ type: "start", offsets: [[0, offset]] }));
    const { bytes, control } = await readUntilControl(peer.inbox);
    assert.equal(control.sha256, sha(data));
    assert.equal(sha(bytes), sha(data.slice(offset)));
    await peer.inbox.control("done");
    peer.send(p2pcp.controlFrame({ type: "verified", files: 1 }));
    await sending;
  }
});

test("version 2: a start offset the receiver did not hold is a protocol error", async () => {
  const { peer, sending } = await toScripted(new Uint8Array(1000), 2, [{ index: 0, size: 10 }]);
  sending.catch(() => {});
  await peer.inbox.control("resume");
  peer.send(p2pcp.controlFrame({ type: "start", offsets: [[0, 7]] }));
  await assert.rejects(sending, (error) => error instanceof p2pcp.ProtocolError);
});

test("a declined offer: the receiver says so, the sender hears why", async () => {
  const [sender, receiver] = pair();
  const view = receiveView(false);
  const [sent, received] = await Promise.allSettled([
    sendFiles(sender, sender.inbox, [source("a.bin", new Uint8Array(10))], sendView()),
    receiveFiles(receiver, receiver.inbox, view),
  ]);
  assert.ok(received.reason instanceof Declined);
  assert.ok(sent.reason instanceof UserError);
  assert.equal(sent.reason.message, "the receiver declined: the receiver declined");
  assert.equal(view.kept.size, 0);
});

test("data damaged on the way: the hash check fails and nothing is kept", async () => {
  const [sender, receiver] = pair();
  sender.tamper = (frame) => {
    if (frame[0] === p2pcp.DATA && frame.length > 100) frame[50] ^= 1;
    return frame;
  };
  const view = receiveView();
  const [sent, received] = await Promise.allSettled([
    sendFiles(sender, sender.inbox, [source("a.bin", new Uint8Array(randomBytes(5000)))], sendView()),
    abortOnError(receiver, () => receiveFiles(receiver, receiver.inbox, view)),
  ]);
  assert.ok(sent.reason instanceof PeerFault, "the receiver's abort stopped the sender");
  assert.match(sent.reason.message, /^the peer stopped the transfer: hash mismatch/);
  assert.ok(received.reason instanceof UserError);
  assert.match(received.reason.message, /^hash mismatch: a\.bin arrived damaged/);
  assert.equal(view.kept.size, 0);
  assert.deepEqual(view.discarded, ["a.bin"]);
});

/** A scripted sender: hello, then `frames` in order, as a hostile or broken peer would. */
async function fromScript(frames) {
  const [peer, receiver] = pair();
  const view = receiveView();
  const receiving = receiveFiles(receiver, receiver.inbox, view);
  peer.send(p2pcp.controlFrame({ type: "hello", protocol: "p2pcp", version: 1 }));
  for (const frame of frames) peer.send(frame);
  const outcome = await Promise.allSettled([receiving]);
  return { outcome: outcome[0], view, peer };
}

const offer = (entries) => p2pcp.controlFrame({ type: "offer", entries, more: false });
const file = (path, size) => ({ path, kind: "file", size, executable: false });

test("more data than the offer declared is a protocol error; nothing is kept", async () => {
  const { outcome, view } = await fromScript([
    offer([file("a.bin", 4)]),
    p2pcp.controlFrame({ type: "resume", offsets: [] }),
    p2pcp.dataFrame(new Uint8Array(5)),
  ]);
  assert.ok(outcome.reason instanceof p2pcp.ProtocolError);
  assert.equal(outcome.reason.message, "protocol error: more data than a.bin declared");
  assert.deepEqual(view.discarded, ["a.bin"]);
});

test("an offer that climbs out of the target is refused before anything is asked", async () => {
  const { outcome, view } = await fromScript([offer([file("../evil", 4)])]);
  assert.ok(outcome.reason instanceof Error);
  assert.equal(view.offered, null, "the user was never asked");
});

test("the peer's abort message reaches the user with its control characters replaced", async () => {
  const { outcome } = await fromScript([
    p2pcp.controlFrame({ type: "abort", reason: "error", message: "\u001b[2Jdisk \u202efull" }),
  ]);
  assert.ok(outcome.reason instanceof PeerFault);
  assert.equal(outcome.reason.message, "the peer stopped the transfer: \uFFFD[2Jdisk \uFFFDfull");
  assert.equal(shown("a\nb\u0007c"), "a\uFFFDb\uFFFDc");
});

test("a text arrives through the view, shown safely", async () => {
  const body = new TextEncoder().encode("hello\u001b[31m world");
  const { outcome, view, peer } = await fromScript([
    offer([{ path: "text", kind: "text", size: body.length, executable: false }]),
    p2pcp.controlFrame({ type: "resume", offsets: [] }),
    p2pcp.dataFrame(body),
    p2pcp.controlFrame({ type: "file_end", index: 0, sha256: sha(body) }),
    p2pcp.controlFrame({ type: "done" }),
  ]);
  assert.equal(outcome.status, "fulfilled");
  assert.deepEqual(view.texts, ["hello\n[31m world"]);
  const verified = peer.sent.length; // the scripted side sent; the receiver answered:
  assert.ok(verified > 0);
  const answer = [];
  for (let i = 0; i < 3; i++) answer.push((await peer.inbox.next()).control.type);
  assert.deepEqual(answer, ["hello", "accept", "verified"]);
});

test("a text with another entry is refused", async () => {
  const { outcome, view } = await fromScript([
    offer([{ path: "text", kind: "text", size: 3, executable: false }, file("a", 1)]),
  ]);
  assert.ok(outcome.reason instanceof p2pcp.ProtocolError);
  assert.equal(view.offered, null);
});

test("a control frame nested 200000 deep is a protocol error, not a crash", async () => {
  const deep = new Uint8Array(200001).fill("[".charCodeAt(0));
  deep[0] = p2pcp.CONTROL;
  assert.throws(() => p2pcp.parseFrame(deep), (error) => error instanceof p2pcp.ProtocolError
    && error.message === "the peer sent a malformed control message");
  const { outcome, view } = await fromScript([deep]);
  assert.ok(outcome.reason instanceof p2pcp.ProtocolError);
  assert.equal(view.offered, null);
});

test("keep-alives: sent each second to a peer that announced them, passed over when received", async () => {
  const [sender, peer] = pair();
  const sending = sendFiles(sender, sender.inbox, [source("a.bin", new Uint8Array(10))], sendView());
  peer.send(p2pcp.controlFrame({ type: "hello", protocol: "p2pcp", version: 2, keepalive: 1 }));
  assert.equal((await peer.inbox.control("hello")).keepalive, 1);
  await peer.inbox.control("offer");
  peer.send(p2pcp.controlFrame({ type: "keepalive" })); // passed over by the page
  await new Promise((resolve) => setTimeout(resolve, 1300)); // a receiver deciding
  peer.send(p2pcp.controlFrame({ type: "accept", credit: CREDIT_WINDOW, have: [] }));
  assert.equal((await peer.inbox.nextFrame()).control.type, "keepalive"); // sent while waiting
  for (;;) if ((await peer.inbox.next()).control?.type === "done") break;
  peer.send(p2pcp.controlFrame({ type: "verified", files: 1 }));
  await sending;
  assert.equal(sender.inbox.beating, null, "the heartbeat stops with the conversation");
});
