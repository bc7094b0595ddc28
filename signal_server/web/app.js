// The page: receive what `p2pcp send` offers, or send files to `p2pcp receive`. The protocol
// pieces live in p2pcp.js; this file does the DOM, the WebSocket to this server and WebRTC.
//
// Hooks for automation and assistive technology: #code, #receive, #files, #send, #accept,
// #decline, #status (a live region) and data-state on <body>: idle, waiting, connected,
// transferring, done or error.
import * as p2pcp from "./p2pcp.js";
import { WORDS } from "./wordlist.js";
import {
  CREDIT_WINDOW,
  SEND_HIGH_WATER,
  SEND_LOW_WATER,
  MAX_TEXT_SIZE,
  PART_SUFFIX,
  LOST,
} from "./constants.js";

const OPEN_TIMEOUT_MS = 30_000;
const CLOSE_WAIT_MS = 5_000;
const LOST_AFTER_MS = 25_000;

const $ = (id) => document.getElementById(id);
let busy = false;
const cleanups = [];

class UserError extends Error {}
/** The peer stopped (its abort) or broke the protocol: it needs no abort from us. */
class PeerFault extends UserError {}
class PeerLeft extends UserError {}
class Declined extends UserError {}

function setState(state) {
  document.body.dataset.state = state;
}

function say(text) {
  $("status").textContent = text; // textContent only: peer-supplied text is never parsed as HTML
}

function shown(text, limit = 300) {
  return String(text).replace(/[\p{Cc}\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/gu, "\uFFFD")
    .slice(0, limit);
}

function formatSize(bytes) {
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

async function run(work) {
  if (busy) return;
  busy = true;
  for (const id of ["receive", "send"]) $(id).disabled = true;
  try {
    await work();
  } catch (error) {
    if (error instanceof Declined) {
      setState("idle"); // nothing went wrong: this side said no
      say(error.message);
      return;
    }
    setState("error");
    say(error instanceof UserError || error instanceof p2pcp.ProtocolError ? error.message
      : `error: ${error && error.message ? error.message : error}`);
    if (!(error instanceof UserError || error instanceof p2pcp.ProtocolError)) console.error(error);
  } finally {
    while (cleanups.length) {
      try {
        cleanups.pop()();
      } catch {
        // closing what is already closed
      }
    }
    busy = false;
    for (const id of ["receive", "send"]) $(id).disabled = false;
  }
}

// -- the rendezvous server ---------------------------------------------------------------------

/** One WebSocket to this page's server (docs/protocol.md section 1). */
class Rendezvous {
  static connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}/`);
    const rendezvous = new Rendezvous(socket);
    cleanups.push(() => socket.close());
    return rendezvous.expect("welcome");
  }

  constructor(socket) {
    this.socket = socket;
    this.queue = [];
    this.waiters = [];
    this.closed = null;
    socket.onmessage = (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      this.push(message);
    };
    socket.onclose = () => {
      this.closed = new UserError("the connection to the rendezvous server closed");
      this.push(null);
    };
  }

  push(message) {
    if (this.waiters.length) this.waiters.shift()(message);
    else this.queue.push(message);
  }

  next() {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    if (this.closed) return Promise.resolve(null);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  send(message) {
    if (this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }

  /** The next server message of `type`; an error message or a closed socket throws. */
  async expect(type) {
    const message = await this.next();
    if (message === null) throw this.closed;
    if (message.type === "error") throw new UserError(serverError(message));
    if (message.type === "welcome") this.iceServers = iceServers(message.ice_servers);
    if (message.type !== type) {
      if (type !== "welcome" && message.type === "peer_left") {
        throw new PeerLeft("the other side left before the transfer started");
      }
      return this.expect(type);
    }
    return type === "welcome" ? this : message;
  }

  /** The next body the peer relayed; its abort ends the attempt with its reason. */
  async body() {
    const message = await this.expect("relay");
    const body = message.body;
    if (body && body.kind === "abort") {
      const text = shown(body.message);
      throw new PeerFault(body.reason === "no_path" ? `the peer could not connect either: ${text}`
        : `the peer gave up: ${text}`);
    }
    return body || {};
  }

  relay(body) {
    this.send({ type: "relay", body });
  }
}

function serverError(message) {
  switch (message.reason) {
    case "no_such_nameplate":
      return "no sender is waiting with that code (check the number, or ask for a new code)";
    case "crowded":
      return "that code was already used: ask the sender for a new one";
    default:
      return `the rendezvous server refused: ${shown(message.message || message.reason)}`;
  }
}

function iceServers(list) {
  if (!Array.isArray(list)) return [];
  return list.filter((s) => s && (typeof s.urls === "string" || Array.isArray(s.urls)))
    .map((s) => ({ urls: s.urls, username: s.username, credential: s.credential }));
}

// -- key agreement and sealed signaling (docs/protocol.md section 2) ---------------------------

async function handshake(rendezvous, code, role) {
  const pake = await p2pcp.spake2Start(code);
  rendezvous.relay({ kind: "pake", msg: p2pcp.toBase64(pake.message) });
  const body = await rendezvous.body();
  if (body.kind !== "pake") throw new UserError("the key exchange failed: unexpected message");
  let shared;
  try {
    shared = await pake.finish(p2pcp.fromBase64(body.msg));
  } catch {
    throw new UserError("the key exchange failed: the peer sent a malformed message");
  }
  const box = await p2pcp.SealedChannel.forRole(shared, role);
  rendezvous.relay({ kind: "sealed", box: await box.seal({ type: "confirm", role }) });
  const confirm = await box.open(String((await rendezvous.body()).box));
  if (confirm === null) {
    throw new UserError("wrong code: the two sides typed different codes (or someone guessed); " +
      "this code is now used up, so ask for a new one");
  }
  const other = role === p2pcp.SENDER ? p2pcp.RECEIVER : p2pcp.SENDER;
  if (confirm.type !== "confirm" || confirm.role !== other) {
    throw new UserError("the key exchange failed: both sides claim the same role");
  }
  const verification = await p2pcp.verificationString(shared);
  $("verification").textContent = `Verification: ${verification} (the same on the other screen)`;
  $("verification").hidden = false;
  cleanups.push(() => {
    $("verification").hidden = true;
  });
  return box;
}

async function sealedSdp(rendezvous, box, kind) {
  const payload = await box.open(String((await rendezvous.body()).box));
  if (payload === null) {
    throw new UserError("a signaling message failed authentication: the transfer was stopped");
  }
  if (payload.type !== kind || typeof payload.sdp !== "string") {
    throw new PeerFault(`the peer sent an unexpected signaling message instead of ${kind}`);
  }
  return payload.sdp;
}

// -- WebRTC ---------------------------------------------------------------------------------

function peerConnection(rendezvous) {
  // The server's STUN/TURN list, never a default one; empty means host candidates only.
  const pc = new RTCPeerConnection({ iceServers: rendezvous.iceServers || [] });
  cleanups.push(() => pc.close());
  const channel = pc.createDataChannel("p2pcp", { negotiated: true, id: 0, ordered: true });
  channel.binaryType = "arraybuffer";
  const inbox = new Inbox(channel); // from the start: the peer may speak as soon as it opens
  // A peer that vanishes sends no close: Chromium's ICE says "disconnected" within seconds of
  // the last answer, and may recover; after LOST_AFTER_MS more it is gone (the CLI's consent
  // checks give up after 30 s too).
  let lostTimer = null;
  pc.addEventListener("iceconnectionstatechange", () => {
    const state = pc.iceConnectionState;
    if (state === "disconnected" && lostTimer === null) {
      lostTimer = setTimeout(() => inbox.push(new UserError(LOST)), LOST_AFTER_MS);
    } else if (state === "connected" || state === "completed") {
      clearTimeout(lostTimer);
      lostTimer = null;
    } else if (state === "failed") {
      inbox.push(new UserError(LOST));
    }
  });
  cleanups.push(() => clearTimeout(lostTimer));
  return { pc, channel, inbox };
}

/** The complete local description: no trickle, every candidate in the SDP (as aiortc does). */
async function completeDescription(pc) {
  if (pc.iceGatheringState !== "complete") {
    await new Promise((resolve) => {
      const done = () => pc.iceGatheringState === "complete" && resolve();
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, 10_000); // gather what we have; a missing server must not hang us
    });
  }
  return pc.localDescription.sdp;
}

function opened(channel, pc, rendezvous) {
  return new Promise((resolve, reject) => {
    if (channel.readyState === "open") return resolve();
    const timer = setTimeout(
      () => reject(new UserError("could not connect to the peer: no network path was found " +
        "(NAT or firewall) and no relay got through")),
      OPEN_TIMEOUT_MS,
    );
    channel.addEventListener("open", () => {
      clearTimeout(timer);
      resolve();
    });
    pc.addEventListener("connectionstatechange", () => {
      if (pc.connectionState === "failed") {
        clearTimeout(timer);
        reject(new UserError("could not connect to the peer (ICE failed)"));
      }
    });
    // The peer's abort ends the wait at once. Its leaving does not: a peer whose channel opened
    // first closes its WebSocket before our "open" event may have fired.
    rendezvous.body().then(() => {}, (error) => {
      if (error instanceof PeerLeft) return;
      clearTimeout(timer);
      reject(error);
    });
  });
}

/** Set up the connection after the key exchange; if that fails for a reason of ours, tell the
 * peer through the room (unsealed, as the CLI does), so it stops at once too. */
async function settingUp(rendezvous, work) {
  try {
    return await work();
  } catch (error) {
    if (!(error instanceof PeerFault)) {
      const noPath = error instanceof UserError && error.message.startsWith("could not connect");
      const reason = noPath ? "no_path" : "error";
      rendezvous.relay({ kind: "abort", reason, message: error.message });
    }
    throw error;
  }
}

/** Run the transfer; if it fails for a reason of ours, tell the peer on the channel first. */
async function transferring(channel, work) {
  try {
    await work();
  } catch (error) {
    if (channel.readyState === "open" && !(error instanceof PeerFault)) {
      channel.send(p2pcp.controlFrame({ type: "abort", reason: "error", message: error.message }));
      await new Promise((resolve) => setTimeout(resolve, 200)); // let it leave before closing
    }
    throw error;
  }
}

/** Frames in, as a queue with backpressure provided by the credit window. */
class Inbox {
  constructor(channel) {
    this.queue = [];
    this.waiters = [];
    this.failure = null;
    channel.onmessage = (event) => {
      const frame = typeof event.data === "string" ? null : new Uint8Array(event.data);
      this.push(frame === null ? new p2pcp.ProtocolError("the peer sent a text message") : frame);
    };
    channel.onclose = () => this.push(new UserError("the connection to the peer was lost"));
    channel.onerror = () => this.push(new UserError("the connection to the peer was lost"));
  }

  push(item) {
    if (this.waiters.length) this.waiters.shift()(item);
    else this.queue.push(item);
  }

  /** The next frame, parsed: {control} or {data}. */
  async next() {
    const item = this.queue.length ? this.queue.shift()
      : await new Promise((resolve) => this.waiters.push(resolve));
    if (item instanceof Error) {
      this.queue.unshift(item);
      throw item;
    }
    const frame = p2pcp.parseFrame(item);
    if (frame.control && frame.control.type === "abort") {
      const text = shown(frame.control.message);
      throw new PeerFault(frame.control.reason === "cancelled" ? "the peer cancelled the transfer"
        : `the peer stopped the transfer: ${text}`);
    }
    return frame;
  }

  async control(...types) {
    const frame = await this.next();
    if (!frame.control || !types.includes(frame.control.type)) {
      throw new p2pcp.ProtocolError(`protocol error: expected ${types.join(" or ")}`);
    }
    return frame.control;
  }
}

async function sayHello(channel, inbox) {
  channel.send(p2pcp.controlFrame({ type: "hello", protocol: "p2pcp", version: 1 }));
  const hello = await inbox.control("hello");
  if (hello.protocol !== "p2pcp" || hello.version !== p2pcp.PROTOCOL_VERSION) {
    throw new PeerFault("the peer speaks another version of the p2pcp protocol");
  }
}

// The side that said the last word waits (bounded) for the peer to close, so that word arrives.
function closeSoon(channel, pc) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, CLOSE_WAIT_MS);
    channel.addEventListener("close", () => {
      clearTimeout(timer);
      resolve();
    });
    if (channel.readyState === "closed") resolve();
  }).then(() => pc.close());
}

// -- receiving ----------------------------------------------------------------------------------

async function receive() {
  $("downloads").replaceChildren();
  $("text").hidden = true;
  let parsed;
  try {
    parsed = p2pcp.parseCode($("code").value, WORDS);
  } catch (error) {
    throw new UserError(error.message);
  }
  setState("waiting");
  say("Connecting…");
  const rendezvous = await Rendezvous.connect();
  rendezvous.send({ type: "join", nameplate: parsed.nameplate });
  await rendezvous.expect("joined");
  say("Checking the code…");
  const box = await handshake(rendezvous, parsed.code, p2pcp.RECEIVER);
  const { pc, channel, inbox } = await settingUp(rendezvous, async () => {
    const offer = await sealedSdp(rendezvous, box, "offer");
    const peer = peerConnection(rendezvous);
    await peer.pc.setRemoteDescription({ type: "offer", sdp: offer });
    await peer.pc.setLocalDescription(await peer.pc.createAnswer());
    const answer = await completeDescription(peer.pc);
    rendezvous.relay({ kind: "sealed", box: await box.seal({ type: "answer", sdp: answer }) });
    say("Connecting to the sender…");
    await opened(peer.channel, peer.pc, rendezvous);
    return peer;
  });
  rendezvous.socket.close();
  await transferring(channel, () => receiveFiles(channel, inbox));
  await closeSoon(channel, pc);
}

async function receiveFiles(channel, inbox) {
  await sayHello(channel, inbox);
  const entries = [];
  for (;;) {
    const part = await inbox.control("offer");
    if (!Array.isArray(part.entries)) throw new p2pcp.ProtocolError("protocol error: a bad offer");
    entries.push(...part.entries.map(p2pcp.checkEntry));
    if (part.more !== true) break;
  }
  p2pcp.validateEntries(entries);
  const texts = entries.filter((e) => e.kind === "text");
  if (texts.length && (entries.length !== 1 || texts[0].size === null || texts[0].size > MAX_TEXT_SIZE)) {
    throw new p2pcp.ProtocolError("protocol error: a text must be the only entry, of at most 1 MiB");
  }
  setState("connected");
  if (!(await askToAccept(entries))) {
    channel.send(p2pcp.controlFrame({ type: "decline", reason: "declined", message: "the receiver declined" }));
    await new Promise((resolve) => setTimeout(resolve, 500));
    throw new Declined("You declined the transfer; nothing was saved.");
  }
  channel.send(p2pcp.controlFrame({ type: "accept", credit: CREDIT_WINDOW, have: [] }));
  const resume = await inbox.control("resume");
  if (!Array.isArray(resume.offsets) || resume.offsets.length) {
    throw new p2pcp.ProtocolError("protocol error: resume names files this side does not hold");
  }
  setState("transferring");
  const dataEntries = entries.filter((e) => e.kind !== "dir");
  const total = dataEntries.reduce((n, e) => n + (e.size || 0), 0);
  const progress = $("progress");
  progress.hidden = false;
  progress.max = Math.max(total, 1);
  progress.value = 0;
  let moved = 0;
  let ungranted = 0;
  let verified = 0;
  for (const [index, entry] of dataEntries.entries()) {
    say(`Receiving ${shown(entry.path)}…`);
    const sink = entry.kind === "text" ? new MemorySink() : await FileSink.open(entry.path);
    cleanups.push(() => sink.discard());
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
        progress.value = moved;
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
    if (entry.kind === "text") {
      $("text").textContent = sink.text();
      $("text").hidden = false;
    } else {
      await sink.save(entry.path);
    }
    verified++;
  }
  const done = await inbox.control("done");
  void done;
  channel.send(p2pcp.controlFrame({ type: "verified", files: verified }));
  setState("done");
  say(`Done: ${verified} ${verified === 1 ? "item" : "items"} received and verified (${formatSize(moved)}).`);
}

function askToAccept(entries) {
  const body = $("offer").tBodies[0];
  body.replaceChildren();
  for (const entry of entries.slice(0, 1000)) {
    const row = body.insertRow();
    row.insertCell().textContent = entry.kind === "dir" ? `${entry.path}/` : entry.path;
    row.insertCell().textContent = entry.kind === "dir" ? "" : formatSize(entry.size);
  }
  const files = entries.filter((e) => e.kind === "file").length;
  const bytes = entries.reduce((n, e) => n + (e.kind === "dir" ? 0 : e.size || 0), 0);
  $("offer-total").textContent = entries.length > 1000 ? `${entries.length} entries (first 1000 shown), ${formatSize(bytes)}`
    : `${files} ${files === 1 ? "file" : "files"}, ${formatSize(bytes)}`;
  $("offer-box").hidden = false;
  say("The sender offers what is listed. Accept?");
  $("accept").focus();
  return new Promise((resolve) => {
    const answer = (yes) => () => {
      $("offer-box").hidden = true;
      $("accept").onclick = $("decline").onclick = null;
      resolve(yes);
    };
    $("accept").onclick = answer(true);
    $("decline").onclick = answer(false);
  });
}

/** A text offered for display. */
class MemorySink {
  constructor() {
    this.parts = [];
  }
  async write(bytes) {
    this.parts.push(bytes.slice());
  }
  text() {
    const all = new Uint8Array(this.parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const part of this.parts) {
      all.set(part, at);
      at += part.length;
    }
    return shown(new TextDecoder().decode(all), MAX_TEXT_SIZE).replace(/\uFFFD/g, "\n");
  }
  discard() {}
}

/**
 * A file streamed to disk as it arrives: into the origin-private file system (OPFS) under a
 * temporary name, so memory stays flat for any size, then offered as a download once its hash
 * matched. Where OPFS is missing, parts are kept as a Blob (the browser may hold it in memory).
 */
class FileSink {
  static async open(path) {
    const sink = new FileSink();
    sink.name = path.split("/").join("_"); // downloads are flat: a/b.txt becomes a_b.txt
    sink.parts = null;
    try {
      const root = await navigator.storage.getDirectory();
      sink.root = root;
      sink.temp = `.${crypto.randomUUID()}${PART_SUFFIX}`;
      sink.handle = await root.getFileHandle(sink.temp, { create: true });
      sink.writable = await sink.handle.createWritable();
    } catch {
      sink.parts = [];
    }
    return sink;
  }

  async write(bytes) {
    if (this.parts) this.parts.push(bytes.slice());
    else await this.writable.write(bytes);
  }

  async save() {
    let blob;
    if (this.parts) {
      blob = new Blob(this.parts);
    } else {
      await this.writable.close();
      this.writable = null;
      blob = await this.handle.getFile();
    }
    const url = URL.createObjectURL(blob);
    const link = document.createElement("a");
    link.href = url;
    link.download = this.name;
    link.textContent = `${this.name} (${formatSize(blob.size)})`;
    const item = document.createElement("li");
    item.append(link);
    $("downloads").append(item);
    link.click();
    this.saved = true;
  }

  discard() {
    if (this.writable) {
      this.writable.abort().catch(() => {});
      this.writable = null;
    }
    if (this.root && !this.saved) this.root.removeEntry(this.temp).catch(() => {});
  }
}

/** Temporary files of earlier visits (a closed tab, a finished download) are removed. */
async function removeOldParts() {
  try {
    const root = await navigator.storage.getDirectory();
    for await (const name of root.keys()) {
      if (name.endsWith(PART_SUFFIX)) await root.removeEntry(name).catch(() => {});
    }
  } catch {
    // no OPFS here
  }
}

// -- sending ------------------------------------------------------------------------------------

async function send() {
  const files = Array.from($("files").files);
  if (!files.length) throw new UserError("pick one or more files to send first");
  const entries = files.map((file) => ({ path: file.name, kind: "file", size: file.size, executable: false }));
  for (const entry of entries) {
    const problem = p2pcp.nameProblem(entry.path);
    if (problem) throw new UserError(`cannot send ${shown(entry.path)}: the name has ${problem}`);
  }
  try {
    p2pcp.validateEntries(entries);
  } catch (error) {
    throw new UserError(error.message.replace("unsafe offer", "cannot send"));
  }
  $("downloads").replaceChildren();
  $("text").hidden = true;
  setState("waiting");
  say("Connecting…");
  const rendezvous = await Rendezvous.connect();
  rendezvous.send({ type: "allocate" });
  const { nameplate } = await rendezvous.expect("allocated");
  const code = p2pcp.makeCode(String(nameplate), WORDS);
  const server = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}`;
  $("your-code").textContent = code;
  $("command").textContent = `p2pcp receive --server ${server} ${code}`;
  $("ticket").hidden = false;
  say(`Waiting for the receiver. Code: ${code}`);
  cleanups.push(() => {
    $("ticket").hidden = true;
  });
  await rendezvous.expect("peer_joined");
  say("Checking the code…");
  const box = await handshake(rendezvous, code, p2pcp.SENDER);
  const { pc, channel, inbox } = await settingUp(rendezvous, async () => {
    const peer = peerConnection(rendezvous);
    await peer.pc.setLocalDescription(await peer.pc.createOffer());
    const offer = await completeDescription(peer.pc);
    rendezvous.relay({ kind: "sealed", box: await box.seal({ type: "offer", sdp: offer }) });
    const answer = await sealedSdp(rendezvous, box, "answer");
    await peer.pc.setRemoteDescription({ type: "answer", sdp: answer });
    say("Connecting to the receiver…");
    await opened(peer.channel, peer.pc, rendezvous);
    return peer;
  });
  rendezvous.socket.close();
  $("ticket").hidden = true;
  setState("connected");
  await transferring(channel, () => sendFiles(channel, pc, inbox, files, entries));
  pc.close(); // the receiver said the last word (verified): close at once, as the CLI does
}

async function sendFiles(channel, pc, inbox, files, entries) {
  await sayHello(channel, inbox);
  for (let at = 0; at < entries.length; at += 500) {
    const part = entries.slice(at, at + 500);
    channel.send(p2pcp.controlFrame({ type: "offer", entries: part, more: at + 500 < entries.length }));
  }
  say("Waiting for the receiver to accept…");
  const answer = await inbox.control("accept", "decline");
  if (answer.type === "decline") {
    throw new UserError(`the receiver declined: ${shown(answer.message || answer.reason)}`);
  }
  if (!p2pcp.isCount(answer.credit) || !Array.isArray(answer.have)) {
    throw new p2pcp.ProtocolError("protocol error: a bad accept");
  }
  // What the receiver already holds: resume after a prefix whose hash matches ours.
  const starts = new Map();
  const hashes = new Map();
  const offsets = [];
  for (const held of answer.have) {
    const file = files[held && held.index];
    if (!file || !p2pcp.isCount(held.size) || held.size > file.size || starts.has(held.index)) {
      throw new p2pcp.ProtocolError("protocol error: a bad 'have' entry");
    }
    const hash = p2pcp.sha256.create();
    await readChunks(file, 0, held.size, async (chunk) => hash.update(chunk));
    const match = p2pcp.hex(hash.clone().digest()) === held.sha256;
    starts.set(held.index, match ? held.size : 0);
    if (match) hashes.set(held.index, hash);
    offsets.push([held.index, match ? held.size : 0]);
  }
  channel.send(p2pcp.controlFrame({ type: "resume", offsets }));
  setState("transferring");
  let credit = answer.credit;
  let sent = 0;
  let wake = null;
  let doneSent = false;
  let verified = false;
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
        if (wake) wake();
      }
    } catch (error) {
      failure = error;
    } finally {
      if (wake) wake();
    }
  })();
  const waitFor = async (ready) => {
    while (!ready()) {
      if (failure) throw failure;
      await new Promise((resolve) => {
        wake = resolve;
      });
      wake = null;
    }
    if (failure) throw failure;
  };
  channel.bufferedAmountLowThreshold = SEND_LOW_WATER;
  channel.addEventListener("bufferedamountlow", () => wake && wake());
  const chunkSize = Math.min(pc.sctp && pc.sctp.maxMessageSize ? pc.sctp.maxMessageSize : 65536, 262144) - 1;
  const total = files.reduce((n, f) => n + f.size, 0);
  const progress = $("progress");
  progress.hidden = false;
  progress.max = Math.max(total, 1);
  progress.value = 0;
  let done = 0;
  for (const [index, file] of files.entries()) {
    say(`Sending ${shown(file.name)}…`);
    const start = starts.get(index) || 0;
    const hash = hashes.get(index) || p2pcp.sha256.create();
    done += start;
    await readChunks(file, start, file.size, async (chunk) => {
      await waitFor(() => sent + chunk.length <= credit && channel.bufferedAmount <= SEND_HIGH_WATER);
      hash.update(chunk);
      channel.send(p2pcp.dataFrame(chunk));
      sent += chunk.length;
      done += chunk.length;
      progress.value = done;
    }, chunkSize);
    channel.send(p2pcp.controlFrame({ type: "file_end", index, sha256: p2pcp.hex(hash.digest()) }));
  }
  channel.send(p2pcp.controlFrame({ type: "done" }));
  doneSent = true;
  say("Waiting for the receiver to verify…");
  await waitFor(() => verified);
  setState("done");
  say(`Done: ${files.length} ${files.length === 1 ? "file" : "files"} sent and verified by the receiver.`);
}

async function readChunks(file, from, to, each, size = 1 << 20) {
  for (let at = from; at < to; at += size) {
    const chunk = new Uint8Array(await file.slice(at, Math.min(at + size, to)).arrayBuffer());
    await each(chunk);
  }
}

// -- wiring ---------------------------------------------------------------------------------------

$("receive-form").addEventListener("submit", (event) => {
  event.preventDefault();
  run(receive);
});
$("send-form").addEventListener("submit", (event) => {
  event.preventDefault();
  run(send);
});
if (!window.isSecureContext || !globalThis.crypto || !crypto.subtle) {
  // WebCrypto (and the file system the page streams into) exist only in secure contexts.
  setState("error");
  say("This page needs a secure connection: open it over https:// (the server's operator " +
    "can add --tls-cert), or from this machine as http://localhost.");
  for (const id of ["receive", "send"]) $(id).disabled = true;
} else {
  removeOldParts();
}
document.body.dataset.ready = "yes";
