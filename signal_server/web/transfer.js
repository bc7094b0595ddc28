// @ts-check
// The page's side of the data-channel protocol (docs/protocol.md section 4): the hello, the
// offer, accept or decline, resume, data under the credit window, the per-file SHA-256 and the
// final `verified`. No DOM and no WebRTC here: the page hands in a channel (anything with
// `send` and `bufferedAmount`), an Inbox fed with the frames that arrive, and a view for what
// the user sees; tests/js/transfer.test.mjs runs both directions against each other under node.
import * as p2pcp from "./p2pcp.js";
import { CREDIT_WINDOW, MAX_TEXT_SIZE, SEND_HIGH_WATER, SEND_LOW_WATER } from "./constants.js";

/** Seconds without a frame from a peer that sends keep-alives, after which it is gone. */
const GONE_AFTER_S = 10;

/** A failure the user should read as it is (no "error:" prefix, no stack in the console). */
export class UserError extends Error {}
/** The peer stopped (its abort) or broke the protocol: it needs no abort from us. */
export class PeerFault extends UserError {}
/** This side said no: nothing went wrong. */
export class Declined extends UserError {}

/** Text from outside (the peer, the server) made safe to show: no control or bidi characters. */
export function shown(/** @type {unknown} */ text, limit = 300) {
  return String(text).replace(/[\p{Cc}\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/gu, "\uFFFD")
    .slice(0, limit);
}

/** A size as the CLI shows it: decimal units, one decimal place. */
export function formatSize(/** @type {number | null | undefined} */ bytes) {
  if (bytes === null || bytes === undefined) return "unknown size";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/**
 * @typedef {object} Channel What the protocol needs of an RTCDataChannel.
 * @property {(frame: Uint8Array) => void} send
 * @property {number} bufferedAmount
 * @property {number} bufferedAmountLowThreshold
 * @property {(type: "bufferedamountlow", listener: () => void) => void} addEventListener
 */

/**
 * @typedef {object} Entry One offered entry, as checked by p2pcp.checkEntry.
 * @property {string} path
 * @property {"file" | "dir" | "text"} kind
 * @property {number | null} size
 * @property {boolean} [executable]
 */

/** @typedef {{control: any, data?: undefined} | {data: Uint8Array, control?: undefined}} Frame */

/** Frames in, as a queue (the credit window bounds it); an Error pushed ends it. */
export class Inbox {
  constructor() {
    /** @type {(Uint8Array | Error)[]} */
    this.queue = [];
    /** @type {((item: Uint8Array | Error) => void)[]} */
    this.waiters = [];
    this.lastHeard = Date.now();
    /** @type {ReturnType<typeof setInterval> | null} */
    this.beating = null;
  }

  /** A frame from the channel, or the error that ends the conversation. */
  push(/** @type {Uint8Array | Error} */ item) {
    if (!(item instanceof Error)) this.lastHeard = Date.now();
    const waiter = this.waiters.shift();
    if (waiter) waiter(item);
    else this.queue.push(item);
  }

  /**
   * Keep-alives (docs/protocol.md) to a peer that announced them every `seconds`: one from us
   * each second, and the conversation ends when the peer has been silent for GONE_AFTER.
   */
  beat(/** @type {Channel} */ channel, /** @type {number} */ seconds) {
    const goneAfter = Math.max(GONE_AFTER_S, 3 * seconds);
    this.beating = setInterval(() => {
      if (Date.now() - this.lastHeard > goneAfter * 1000) {
        this.stopBeating();
        this.push(new UserError(`the peer stopped answering (nothing for ${goneAfter} s)`));
        return;
      }
      try {
        channel.send(p2pcp.controlFrame({ type: "keepalive" }));
      } catch {
        // a closed channel: its close event ends the conversation
      }
    }, 1000);
  }

  stopBeating() {
    if (this.beating !== null) clearInterval(this.beating);
    this.beating = null;
  }

  /** The next frame, parsed; the peer's abort throws a PeerFault with its (escaped) message.
   * Keep-alives are passed over. */
  async next() {
    for (;;) {
      const frame = await this.nextFrame();
      if (!frame.control || frame.control.type !== "keepalive") return frame;
    }
  }

  async nextFrame() {
    const queued = this.queue.shift();
    const item = queued !== undefined ? queued
      : await new Promise((resolve) => this.waiters.push(resolve));
    if (item instanceof Error) {
      this.queue.unshift(item); // every later read fails the same way
      throw item;
    }
    /** @type {Frame} */
    const frame = p2pcp.parseFrame(item);
    if (frame.control && frame.control.type === "abort") {
      throw new PeerFault(frame.control.reason === "cancelled" ? "the peer cancelled the transfer"
        : `the peer stopped the transfer: ${shown(frame.control.message)}`);
    }
    return frame;
  }

  /** The next frame, which must be a control message of one of `types`. */
  async control(/** @type {string[]} */ ...types) {
    const frame = await this.next();
    if (!frame.control || !types.includes(frame.control.type)) {
      throw new p2pcp.ProtocolError(`protocol error: expected ${types.join(" or ")}`);
    }
    return frame.control;
  }
}

/** Tell the peer why this side stops (unless the peer stopped first), then rethrow. */
export async function abortOnError(/** @type {Channel & {readyState: string}} */ channel,
  /** @type {() => Promise<void>} */ work) {
  try {
    await work();
  } catch (error) {
    if (channel.readyState === "open" && !(error instanceof PeerFault)) {
      const message = error instanceof Error ? error.message : String(error);
      channel.send(p2pcp.controlFrame({ type: "abort", reason: "error", message }));
      await new Promise((resolve) => setTimeout(resolve, 200)); // let it leave before closing
    }
    throw error;
  }
}

/** Both hellos; returns the version both sides speak (the lower of the two). */
async function sayHello(/** @type {Channel} */ channel, /** @type {Inbox} */ inbox) {
  // `version` says 1 (p2pcp before revisions refuses any other number); `revision` says 2.
  channel.send(p2pcp.controlFrame({
    type: "hello", protocol: "p2pcp", version: 1, revision: p2pcp.PROTOCOL_VERSION, keepalive: 1,
  }));
  const hello = await inbox.control("hello");
  if (hello.protocol !== "p2pcp" || !Number.isInteger(hello.version)
    || hello.version < p2pcp.OLDEST_VERSION) {
    throw new PeerFault("the peer speaks another version of the p2pcp protocol");
  }
  if (Number.isInteger(hello.keepalive) && hello.keepalive > 0) inbox.beat(channel, hello.keepalive);
  const level = Number.isInteger(hello.revision) ? Math.max(hello.version, hello.revision) : hello.version;
  return Math.min(level, p2pcp.PROTOCOL_VERSION);
}

// -- receiving ----------------------------------------------------------------------------------

/**
 * @typedef {object} Sink Where one file's bytes go until its hash matched.
 * @property {(bytes: Uint8Array) => Promise<void>} write
 * @property {() => Promise<void>} keep  the hash matched: offer it to the user
 * @property {() => void} discard        it did not, or the transfer stopped: drop it
 */

/**
 * @typedef {object} ReceiveView What the receiving page shows and asks.
 * @property {(entries: Entry[]) => Promise<boolean>} accept  the offer: true to accept
 * @property {(total: number) => void} started
 * @property {(entry: Entry) => void} receiving               a file begins
 * @property {(moved: number) => void} progress               bytes so far, all files
 * @property {(entry: Entry) => Promise<Sink>} open            a sink for a file
 * @property {(text: string) => void} text                    a text arrived and was verified
 */

/** The offer (in parts), checked as the CLI checks it. */
async function takeOffer(/** @type {Inbox} */ inbox) {
  /** @type {Entry[]} */
  const entries = [];
  for (;;) {
    const part = await inbox.control("offer");
    if (!Array.isArray(part.entries)) throw new p2pcp.ProtocolError("protocol error: a bad offer");
    entries.push(...part.entries.map(p2pcp.checkEntry));
    if (part.more !== true) break;
  }
  p2pcp.validateEntries(entries);
  const texts = entries.filter((e) => e.kind === "text");
  const text = texts[0];
  if (text && (entries.length !== 1 || text.size === null || text.size > MAX_TEXT_SIZE)) {
    throw new p2pcp.ProtocolError("protocol error: a text must be the only entry, of at most 1 MiB");
  }
  return entries;
}

/** A text offered for display, kept in memory (at most MAX_TEXT_SIZE bytes). */
class TextSink {
  constructor() {
    /** @type {Uint8Array[]} */
    this.parts = [];
  }
  async write(/** @type {Uint8Array} */ bytes) {
    this.parts.push(bytes.slice());
  }
  async keep() {}
  discard() {}
  text() {
    const all = new Uint8Array(this.parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const part of this.parts) {
      all.set(part, at);
      at += part.length;
    }
    return shown(new TextDecoder().decode(all), MAX_TEXT_SIZE).replace(/\uFFFD/g, "\n");
  }
}

/**
 * Receive what the peer offers, if the user accepts. Each file is kept only after its SHA-256
 * matched; one that fails stops the transfer with nothing of it kept.
 * @returns {Promise<{verified: number, moved: number}>}
 */
export async function receiveFiles(/** @type {Channel} */ channel, /** @type {Inbox} */ inbox,
  /** @type {ReceiveView} */ view) {
  try {
    return await receiving(channel, inbox, view);
  } finally {
    inbox.stopBeating();
  }
}

async function receiving(/** @type {Channel} */ channel, /** @type {Inbox} */ inbox,
  /** @type {ReceiveView} */ view) {
  await sayHello(channel, inbox);
  const entries = await takeOffer(inbox);
  if (!(await view.accept(entries))) {
    channel.send(p2pcp.controlFrame({ type: "decline", reason: "declined", message: "the receiver declined" }));
    await new Promise((resolve) => setTimeout(resolve, 500)); // let it leave before closing
    throw new Declined("You declined the transfer; nothing was saved.");
  }
  channel.send(p2pcp.controlFrame({ type: "accept", credit: CREDIT_WINDOW, have: [] }));
  const resume = await inbox.control("resume");
  if (!Array.isArray(resume.offsets) || resume.offsets.length) {
    throw new p2pcp.ProtocolError("protocol error: resume names files this side does not hold");
  }
  const dataEntries = entries.filter((e) => e.kind !== "dir");
  view.started(dataEntries.reduce((n, e) => n + (e.size || 0), 0));
  let moved = 0;
  let ungranted = 0;
  let verified = 0;
  for (const [index, entry] of dataEntries.entries()) {
    view.receiving(entry);
    const text = entry.kind === "text" ? new TextSink() : null;
    const sink = text || await view.open(entry);
    let kept = false;
    try {
      const hash = p2pcp.sha256.create();
      let size = 0;
      for (;;) {
        const frame = await inbox.next();
        if (frame.data) {
          size += frame.data.length;
          if (entry.size !== null && size > entry.size) {
            throw new p2pcp.ProtocolError(`protocol error: more data than ${shown(entry.path)} declared`);
          }
          hash.update(frame.data);
          await sink.write(frame.data);
          moved += frame.data.length;
          view.progress(moved);
          ungranted += frame.data.length;
          if (ungranted >= CREDIT_WINDOW / 4) {
            channel.send(p2pcp.controlFrame({ type: "credit", bytes: ungranted }));
            ungranted = 0;
          }
          continue;
        }
        const end = frame.control;
        if (end.type !== "file_end" || end.index !== index) {
          throw new p2pcp.ProtocolError("protocol error: expected the end of the current file");
        }
        if (entry.size !== null && size !== entry.size) {
          throw new p2pcp.ProtocolError(`protocol error: ${shown(entry.path)} ended short`);
        }
        if (typeof end.sha256 !== "string" || end.sha256 !== p2pcp.hex(hash.digest())) {
          throw new UserError(`hash mismatch: ${shown(entry.path)} arrived damaged and was not saved`);
        }
        break;
      }
      await sink.keep();
      kept = true;
    } finally {
      if (!kept) sink.discard();
    }
    if (text) view.text(text.text());
    verified++;
  }
  await inbox.control("done");
  channel.send(p2pcp.controlFrame({ type: "verified", files: verified }));
  return { verified, moved };
}

// -- sending ------------------------------------------------------------------------------------

/**
 * @typedef {object} Source One file to send.
 * @property {string} name
 * @property {number} size
 * @property {(from: number, to: number) => Promise<Uint8Array>} read
 */

/**
 * @typedef {object} SendView What the sending page shows.
 * @property {() => void} offered                the offer is out: waiting for the answer
 * @property {(total: number) => void} started
 * @property {(source: Source) => void} sending  a file begins
 * @property {(done: number) => void} progress   bytes so far, all files (resumed ones included)
 * @property {() => void} finishing              all sent: waiting for `verified`
 */

/** The entries a list of picked files offers (flat: a file picker gives names only). */
export function entriesOf(/** @type {Source[]} */ sources) {
  // A folder's files carry their relative paths ("photos/2024/a.jpg"): its directories come
  // first, parents before children, then every file in the order given.
  const dirs = new Set();
  for (const source of sources) {
    const parts = source.name.split("/");
    for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join("/"));
  }
  /** @type {Entry[]} */
  const entries = [
    ...[...dirs].sort((a, b) => a.split("/").length - b.split("/").length || (a < b ? -1 : 1))
      .map((path) => ({ path, kind: /** @type {const} */ ("dir"), size: null })),
    ...sources.map((s) => ({ path: s.name, kind: /** @type {const} */ ("file"), size: s.size, executable: false })),
  ];
  for (const entry of entries) {
    const problem = p2pcp.nameProblem(entry.path);
    if (problem) throw new UserError(`cannot send ${shown(entry.path)}: the name has ${problem}`);
  }
  try {
    p2pcp.validateEntries(entries);
  } catch (error) {
    throw new UserError(String(error instanceof Error ? error.message : error)
      .replace("unsafe offer", "cannot send"));
  }
  return entries;
}

async function readChunks(/** @type {Source} */ source, /** @type {number} */ from,
  /** @type {number} */ to, /** @type {(chunk: Uint8Array) => Promise<void>} */ each, size = 1 << 20) {
  for (let at = from; at < to; at += size) await each(await source.read(at, Math.min(at + size, to)));
}

/**
 * Offer `sources` and send them within the receiver's credit and the channel's buffer; resume
 * after a prefix the receiver holds when its hash matches ours. Ends when the receiver says
 * `verified`.
 */
export async function sendFiles(/** @type {Channel} */ channel, /** @type {Inbox} */ inbox,
  /** @type {Source[]} */ sources, /** @type {SendView} */ view, chunkSize = 65535) {
  try {
    await sending(channel, inbox, sources, view, chunkSize);
  } finally {
    inbox.stopBeating();
  }
}

async function sending(/** @type {Channel} */ channel, /** @type {Inbox} */ inbox,
  /** @type {Source[]} */ sources, /** @type {SendView} */ view, chunkSize = 65535) {
  const entries = entriesOf(sources);
  const version = await sayHello(channel, inbox);
  for (let at = 0; at < entries.length; at += 500) {
    const part = entries.slice(at, at + 500);
    channel.send(p2pcp.controlFrame({ type: "offer", entries: part, more: at + 500 < entries.length }));
  }
  view.offered();
  const answer = await inbox.control("accept", "decline");
  if (answer.type === "decline") {
    throw new UserError(`the receiver declined: ${shown(answer.message || answer.reason)}`);
  }
  if (!p2pcp.isCount(answer.credit) || !Array.isArray(answer.have)) {
    throw new p2pcp.ProtocolError("protocol error: a bad accept");
  }
  /** @type {Map<number, number>} */
  const starts = new Map();
  /** @type {Map<number, ReturnType<typeof p2pcp.sha256.create>>} */
  const hashes = new Map();
  /** @type {[number, number][]} */
  const offsets = [];
  /** @type {[number, number, string][]} */
  const prefixes = [];
  /** @type {Map<number, number>} */
  const held = new Map();
  for (const have of answer.have) {
    const source = sources[have && have.index];
    if (!source || !p2pcp.isCount(have.size) || have.size > source.size || held.has(have.index)) {
      throw new p2pcp.ProtocolError("protocol error: a bad 'have' entry");
    }
    held.set(have.index, have.size);
    const hash = p2pcp.sha256.create();
    await readChunks(source, 0, have.size, async (chunk) => {
      hash.update(chunk);
    });
    const digest = p2pcp.hex(hash.clone().digest());
    hashes.set(have.index, hash);
    // Version 2: our hash goes to the receiver, which compares it with its own and says where
    // data starts. Version 1: the receiver sent its hash, and we decide.
    if (version >= 2) prefixes.push([have.index, have.size, digest]);
    else offsets.push([have.index, digest === have.sha256 ? have.size : 0]);
  }
  channel.send(p2pcp.controlFrame(prefixes.length ? { type: "resume", offsets: [], prefixes }
    : { type: "resume", offsets }));
  if (prefixes.length) offsets.push(...(await inbox.control("start")).offsets || []);
  for (const pair of offsets) {
    const [index, offset] = Array.isArray(pair) ? pair : [-1, -1];
    if (!held.has(index) || (offset !== 0 && offset !== held.get(index))) {
      throw new p2pcp.ProtocolError("protocol error: a bad resume offset");
    }
    if (offset) starts.set(index, offset);
    else hashes.delete(index);
  }
  for (const index of held.keys()) if (!starts.has(index)) hashes.delete(index);
  let credit = answer.credit;
  let sent = 0;
  // Whoever waits leaves its wake-up here (an object: TypeScript narrows a plain `let` to null).
  /** @type {{wake: (() => void) | null}} */
  const waiting = { wake: null };
  let doneSent = false;
  let verified = false;
  /** @type {unknown} */
  let failure = null;
  // Credit (and at the end `verified`) arrive while we send; anything else is an error, and an
  // abort from the peer becomes its message.
  (async () => {
    try {
      for (;;) {
        const message = await inbox.control("credit", "verified");
        if (message.type === "verified") {
          if (!doneSent) throw new p2pcp.ProtocolError("protocol error: verified before done");
          verified = true;
          return;
        }
        if (!p2pcp.isCount(message.bytes)) throw new p2pcp.ProtocolError("protocol error: bad credit");
        credit += message.bytes;
        if (waiting.wake) waiting.wake();
      }
    } catch (error) {
      failure = error;
    } finally {
      if (waiting.wake) waiting.wake();
    }
  })();
  const waitFor = async (/** @type {() => boolean} */ ready) => {
    while (!ready()) {
      if (failure) throw failure;
      await new Promise((resolve) => {
        waiting.wake = () => resolve(undefined);
      });
      waiting.wake = null;
    }
    if (failure) throw failure;
  };
  channel.bufferedAmountLowThreshold = SEND_LOW_WATER;
  channel.addEventListener("bufferedamountlow", () => waiting.wake && waiting.wake());
  view.started(sources.reduce((n, s) => n + s.size, 0));
  let done = 0;
  for (const [index, source] of sources.entries()) {
    view.sending(source);
    const start = starts.get(index) || 0;
    const hash = hashes.get(index) || p2pcp.sha256.create();
    done += start;
    await readChunks(source, start, source.size, async (chunk) => {
      await waitFor(() => sent + chunk.length <= credit && channel.bufferedAmount <= SEND_HIGH_WATER);
      hash.update(chunk);
      channel.send(p2pcp.dataFrame(chunk));
      sent += chunk.length;
      done += chunk.length;
      view.progress(done);
    }, chunkSize);
    channel.send(p2pcp.controlFrame({ type: "file_end", index, sha256: p2pcp.hex(hash.digest()) }));
  }
  channel.send(p2pcp.controlFrame({ type: "done" }));
  doneSent = true;
  view.finishing();
  await waitFor(() => verified);
}
