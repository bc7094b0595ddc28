// @ts-check
// The page: receive what `p2pcp send` offers, or send files to `p2pcp receive`. The protocol
// pieces live in p2pcp.js and transfer.js; this file does the DOM, the WebSocket to this server
// and WebRTC.
//
// Hooks for automation and assistive technology: #code, #receive, #files, #send, #accept,
// #decline, #status (a live region) and data-state on <body>: idle, waiting, connected,
// transferring, done or error.
import * as p2pcp from "./p2pcp.js";
import { WORDS } from "./wordlist.js";
import { PART_SUFFIX, LOST } from "./constants.js";
import { encode } from "./vendor/qr.js";
import { downloadZip } from "./vendor/zip.js";
import {
  Declined,
  Inbox,
  PeerFault,
  UserError,
  abortOnError,
  entriesOf,
  formatSize,
  receiveFiles,
  sendFiles,
  shown,
} from "./transfer.js";

const OPEN_TIMEOUT_MS = 30_000;
const CLOSE_WAIT_MS = 5_000;
const LOST_AFTER_MS = 25_000;

/** The page's element `id` (index.html has every one this file names). */
function $(/** @type {string} */ id) {
  const element = document.getElementById(id);
  if (!element) throw new Error(`the page has no #${id}`);
  return element;
}

/**
 * The page's element `id`, which must be a `kind` (an <input>, a <progress>, ...).
 * @template {HTMLElement} T
 * @param {string} id
 * @param {{new (): T, prototype: T}} kind
 * @returns {T}
 */
function the(id, kind) {
  const element = $(id);
  if (!(element instanceof kind)) throw new Error(`#${id} is not a ${kind.name}`);
  return element;
}

/** The two buttons that start something: off while something runs. */
function buttons(/** @type {boolean} */ enabled) {
  for (const id of ["receive", "send"]) the(id, HTMLButtonElement).disabled = !enabled;
}
let busy = false;
/** @type {(() => void)[]} */
const cleanups = [];
/** The peer left the room before the data channel opened. */
class PeerLeft extends UserError {}
/** The side that joined left without a word (no guess at the code): the room is open again. */
class Reopened extends PeerLeft {}

function setState(state) {
  document.body.dataset.state = state;
}

function say(text) {
  $("status").textContent = text; // textContent only: peer-supplied text is never parsed as HTML
}

async function run(work) {
  if (busy) return;
  busy = true;
  buttons(false);
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
      : `error: ${error instanceof Error ? error.message : error}`);
    if (!(error instanceof UserError || error instanceof p2pcp.ProtocolError)) console.error(error);
  } finally {
    while (cleanups.length) {
      try {
        cleanups.pop()?.();
      } catch {
        // closing what is already closed
      }
    }
    busy = false;
    buttons(true);
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
    // A relay that found nobody (the joiner had left) is answered with no_peer: not an error
    // while we wait for the next joiner.
    if (message.type === "error" && message.reason === "no_peer" && type === "peer_joined") {
      return this.expect(type);
    }
    if (message.type === "error") throw new UserError(serverError(message));
    // STUN comes with the welcome; TURN (credentials minted for us) with allocated or joined.
    if (["welcome", "allocated", "joined"].includes(message.type) && Array.isArray(message.ice_servers)) {
      this.iceServers = iceServers(message.ice_servers);
    }
    if (message.type !== type) {
      if (type !== "welcome" && message.type === "peer_left") {
        if (message.reopened === true) throw new Reopened("someone joined and left");
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
  const inbox = new Inbox(); // fed from the start: the peer may speak as soon as it opens
  channel.onmessage = (event) => {
    const data = event.data;
    inbox.push(typeof data === "string" ? new p2pcp.ProtocolError("the peer sent a text message")
      : new Uint8Array(data));
  };
  channel.onclose = () => inbox.push(new UserError("the connection to the peer was lost"));
  channel.onerror = () => inbox.push(new UserError("the connection to the peer was lost"));
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
    await new Promise(/** @param {(value?: unknown) => void} resolve */ (resolve) => {
      const done = () => pc.iceGatheringState === "complete" && resolve();
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, 10_000); // gather what we have; a missing server must not hang us
    });
  }
  return pc.localDescription.sdp;
}

function opened(channel, pc, rendezvous) {
  return new Promise(/** @param {(value?: unknown) => void} resolve */ (resolve, reject) => {
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
      const message = error instanceof Error ? error.message : String(error);
      rendezvous.relay({ kind: "abort", reason, message });
    }
    throw error;
  }
}

// The side that said the last word waits (bounded) for the peer to close, so that word arrives.
function closeSoon(channel, pc) {
  return new Promise(/** @param {(value?: unknown) => void} resolve */ (resolve) => {
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
    parsed = p2pcp.parseCode(the("code", HTMLInputElement).value, WORDS);
  } catch (error) {
    throw new UserError(error instanceof Error ? error.message : String(error));
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
  await abortOnError(channel, async () => {
    const view = receiveView();
    const { verified, moved } = await receiveFiles(channel, inbox, view);
    await view.zip?.finish(); // offered only now: every file in it was verified
    setState("done");
    say(`Done: ${countFiles(verified)} received and verified (${formatSize(moved)}).`);
  });
  await closeSoon(channel, pc);
}

/** "1 file" or "3 files": the same words for the same counts, offer to end. */
function countFiles(/** @type {number} */ n) {
  return `${n} ${n === 1 ? "file" : "files"}`;
}

/**
 * The bar and the line under it: file k of n, its name, the rate and the time left. The rate
 * is the CLI's: bytes moved over the seconds since data started.
 */
class Meter {
  constructor(/** @type {number} */ files) {
    this.bar = the("progress", HTMLProgressElement);
    this.line = $("progress-text");
    this.files = files;
    this.file = 0;
    this.name = "";
    this.total = 1;
    this.started = 0;
    cleanups.push(() => {
      this.line.hidden = true;
    });
  }

  start(/** @type {number} */ total) {
    setState("transferring");
    this.total = Math.max(total, 1);
    this.started = performance.now();
    this.bar.hidden = this.line.hidden = false;
    this.bar.max = this.total;
    this.bar.value = 0;
  }

  next(/** @type {string} */ name) {
    this.file++;
    this.name = shown(name);
    say(`Moving ${this.name}…`);
  }

  update(/** @type {number} */ moved) {
    this.bar.value = moved;
    const seconds = (performance.now() - this.started) / 1000;
    const rate = seconds > 0.2 ? moved / seconds : 0;
    const left = rate ? Math.round((this.total - moved) / rate) : null;
    this.line.textContent = [
      `file ${this.file} of ${this.files}`,
      this.name,
      rate ? `${formatSize(rate)}/s` : "",
      left === null ? "" : `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")} left`,
    ].filter((part) => part).join(" · ");
  }
}

/** @returns {import("./transfer.js").ReceiveView & {zip: Zipper | null, dir: FileSystemDirectoryHandle | null}} */
function receiveView() {
  /** @type {Meter | null} */
  let meter = null;
  return {
    zip: /** @type {Zipper | null} */ (null),
    dir: /** @type {FileSystemDirectoryHandle | null} */ (null),
    async accept(entries) {
      setState("connected");
      const files = entries.filter((e) => e.kind !== "dir");
      meter = new Meter(files.length);
      const answer = await askToAccept(entries);
      if (answer && answer !== true) {
        this.dir = answer; // the real tree, into the folder the user chose
      } else if (answer && (files.length > 1 || files.length < entries.length)) {
        this.zip = new Zipper(zipName(entries)); // a folder, or several files: one .zip
      }
      return Boolean(answer);
    },
    started: (total) => meter?.start(total),
    receiving: (entry) => meter?.next(entry.path),
    progress: (moved) => meter?.update(moved),
    async open(entry) {
      if (this.dir) {
        const sink = await DirSink.open(this.dir, entry.path);
        cleanups.push(() => sink.discard());
        return sink;
      }
      if (this.zip && !this.zip.written) await this.zip.start();
      const sink = await FileSink.open(entry.path, this.zip);
      cleanups.push(() => sink.discard());
      return sink;
    },
    text: (text) => {
      $("text").textContent = text;
      $("text").hidden = false;
    },
  };
}

function askToAccept(entries) {
  const body = the("offer", HTMLTableElement).tBodies[0];
  body.replaceChildren();
  for (const entry of entries.slice(0, 1000)) {
    const row = body.insertRow();
    row.insertCell().textContent = entry.kind === "dir" ? `${entry.path}/` : entry.path;
    row.insertCell().textContent = entry.kind === "dir" ? "" : formatSize(entry.size);
  }
  const files = entries.filter((e) => e.kind !== "dir").length;
  const bytes = entries.reduce((n, e) => n + (e.kind === "dir" ? 0 : e.size || 0), 0);
  const shownRows = entries.length > 1000 ? ` (first 1000 of ${entries.length} entries shown)` : "";
  $("offer-total").textContent = `${countFiles(files)}, ${formatSize(bytes)}${shownRows}`;
  $("offer-box").hidden = false;
  say("The sender offers what is listed. Accept?");
  // Several files where the browser can write a real folder: that comes first; Accept keeps
  // the zip.
  const folder = the("accept-folder", HTMLButtonElement);
  const picker = /** @type {any} */ (window).showDirectoryPicker;
  folder.hidden = !(typeof picker === "function" && entries.filter((e) => e.kind !== "dir").length > 1);
  (folder.hidden ? $("accept") : folder).focus();
  return new Promise((resolve) => {
    /** @param {boolean | FileSystemDirectoryHandle} yes */
    const done = (yes) => {
      $("offer-box").hidden = true;
      $("accept").onclick = $("decline").onclick = folder.onclick = null;
      resolve(yes);
    };
    $("accept").onclick = () => done(true);
    $("decline").onclick = () => done(false);
    folder.onclick = async () => {
      try {
        done(await picker.call(window, { mode: "readwrite" }));
      } catch {
        say("No folder was chosen. Accept to save a zip, or choose a folder."); // cancelled
      }
    };
  });
}

/**
 * A file written into a folder the user chose (showDirectoryPicker): the real tree, each file
 * under `.NAME.p2pcp-part` until its hash matched, then renamed; a name already there is never
 * overwritten.
 */
class DirSink {
  static async open(/** @type {FileSystemDirectoryHandle} */ root, /** @type {string} */ path) {
    const parts = path.split("/");
    const name = /** @type {string} */ (parts.pop());
    let dir = root;
    for (const part of parts) dir = await dir.getDirectoryHandle(part, { create: true });
    const exists = await dir.getFileHandle(name).then(() => true, () => false);
    if (exists) throw new UserError(`${shown(path)} exists in the chosen folder; nothing was overwritten`);
    const temp = `.${name}${PART_SUFFIX}`;
    const handle = await dir.getFileHandle(temp, { create: true });
    return new DirSink(dir, name, temp, handle, await handle.createWritable());
  }

  constructor(/** @type {FileSystemDirectoryHandle} */ dir, /** @type {string} */ name,
    /** @type {string} */ temp, /** @type {FileSystemFileHandle} */ handle,
    /** @type {FileSystemWritableFileStream} */ writable) {
    /** @type {FileSystemWritableFileStream | null} */
    this.writable = writable;
    this.dir = dir;
    this.name = name;
    this.temp = temp;
    this.handle = handle;
    this.saved = false;
  }

  async write(/** @type {Uint8Array} */ bytes) {
    await this.writable?.write(/** @type {Uint8Array<ArrayBuffer>} */ (bytes));
  }

  async keep() {
    await this.writable?.close();
    this.writable = null;
    await /** @type {any} */ (this.handle).move(this.name); // verified: under its own name
    this.saved = true;
  }

  discard() {
    this.writable?.abort().catch(() => {});
    this.writable = null;
    if (!this.saved) this.dir.removeEntry(this.temp).catch(() => {});
  }
}

/**
 * A file streamed to disk as it arrives: into the origin-private file system (OPFS) under a
 * temporary name, so memory stays flat for any size, then offered as a download once its hash
 * matched. Where OPFS is missing, parts are kept as a Blob (the browser may hold it in memory).
 */
class FileSink {
  static async open(/** @type {string} */ path, /** @type {Zipper | null} */ zip = null) {
    const name = zip ? path : path.split("/").join("_"); // a lone download is flat
    /** @type {FileSink} */
    let sink;
    try {
      const stored = await temporary();
      sink = new FileSink(name, { ...stored, writable: await stored.handle.createWritable() });
    } catch {
      sink = new FileSink(name, null);
    }
    sink.zip = zip;
    return sink;
  }

  /**
   * @param {string} name
   * @param {{root: FileSystemDirectoryHandle, temp: string, handle: FileSystemFileHandle,
   *   writable: FileSystemWritableFileStream | null} | null} stored  in OPFS, or null: in memory
   */
  constructor(name, stored) {
    this.name = name;
    this.stored = stored;
    /** @type {Zipper | null} */
    this.zip = null;
    /** @type {Uint8Array[]} */
    this.parts = [];
    this.saved = false;
  }

  async write(/** @type {Uint8Array} */ bytes) {
    if (!this.stored) this.parts.push(bytes.slice());
    else await this.stored.writable?.write(/** @type {Uint8Array<ArrayBuffer>} */ (bytes));
  }

  /** Its hash matched: offer it as a download. */
  async keep() {
    let blob;
    if (!this.stored) {
      blob = new Blob(/** @type {Uint8Array<ArrayBuffer>[]} */ (this.parts));
    } else {
      await this.stored.writable?.close();
      this.stored.writable = null;
      blob = await this.stored.handle.getFile();
    }
    this.saved = true;
    if (this.zip) {
      this.zip.add(this.name, blob, this.stored); // verified: into the zip, streamed from disk
      return;
    }
    offer(blob, this.name);
  }


  discard() {
    const stored = this.stored;
    if (!stored) return;
    if (stored.writable) {
      stored.writable.abort().catch(() => {});
      stored.writable = null;
    }
    if (!this.saved) stored.root.removeEntry(stored.temp).catch(() => {});
  }
}

/** A new temporary file in the origin-private file system (throws where there is none). */
async function temporary() {
  const root = await navigator.storage.getDirectory();
  const temp = `.${crypto.randomUUID()}${PART_SUFFIX}`;
  return { root, temp, handle: await root.getFileHandle(temp, { create: true }) };
}

/** Offer `blob` as a download named `name` (a link too, for a second try). */
function offer(/** @type {Blob} */ blob, /** @type {string} */ name) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  link.textContent = `${name} (${formatSize(blob.size)})`;
  const item = document.createElement("li");
  item.append(link);
  $("downloads").append(item);
  link.click();
}

/**
 * A received folder (or several files) as one .zip, written while the files arrive: each
 * file joins it once its SHA-256 matched, and the zip streams into the origin-private file
 * system, never whole in memory. It is offered only when every file was verified; a transfer
 * that fails discards it.
 */
class Zipper {
  constructor(/** @type {string} */ name) {
    this.name = name;
    /** @type {{name: string, input: Blob, lastModified: Date}[]} */
    this.queue = [];
    /** @type {(() => void) | null} */
    this.wake = null;
    this.closed = false;
    /** @type {{root: FileSystemDirectoryHandle, temp: string}[]} */
    this.members = [];
    /** @type {{root: FileSystemDirectoryHandle, temp: string, handle: FileSystemFileHandle} | null} */
    this.stored = null;
    /** @type {Promise<Blob> | null} */
    this.written = null;
    cleanups.push(() => this.discard());
  }

  async start() {
    const body = downloadZip(this.files()).body;
    if (!body) throw new Error("the zip stream did not start");
    try {
      this.stored = await temporary();
      const stored = this.stored;
      const writable = await stored.handle.createWritable();
      this.written = body.pipeTo(writable).then(() => stored.handle.getFile());
    } catch {
      this.written = new Response(body).blob(); // no private file system: in memory
    }
  }

  add(/** @type {string} */ name, /** @type {Blob} */ input, /** @type {any} */ stored) {
    this.queue.push({ name, input, lastModified: new Date() });
    if (stored) this.members.push(stored);
    this.wake?.();
  }

  async *files() {
    for (;;) {
      const next = this.queue.shift();
      if (next) yield next;
      else if (this.closed) return;
      else await new Promise((resolve) => { this.wake = () => resolve(undefined); });
    }
  }

  /** Every file is in and verified: finish the zip and offer it. */
  async finish() {
    this.closed = true;
    this.wake?.();
    if (!this.written) return;
    offer(await this.written, this.name);
    this.done = true;
  }

  discard() {
    for (const { root, temp } of this.members) root.removeEntry(temp).catch(() => {});
    if (this.stored && !this.done) this.stored.root.removeEntry(this.stored.temp).catch(() => {});
  }
}

/** The zip's name: the folder's, when everything sits in one; else "p2pcp.zip". */
function zipName(/** @type {{path: string}[]} */ entries) {
  const tops = new Set(entries.map((e) => e.path.split("/", 1)[0]));
  const only = [...tops][0];
  return tops.size === 1 && entries.some((e) => e.path.includes("/")) ? `${only}.zip` : "p2pcp.zip";
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

/** The QR code of `text` on the ticket's canvas: dark modules on white, a 4-module border. */
function drawQr(/** @type {string} */ text) {
  const canvas = the("qr", HTMLCanvasElement);
  const { data, version, maskPattern } = encode(text, { border: 4 });
  const scale = 4;
  canvas.width = canvas.height = data.length * scale;
  Object.assign(canvas.dataset, { text, version: String(version), mask: String(maskPattern) });
  const context = canvas.getContext("2d");
  if (!context) return;
  context.fillStyle = "#fff";
  context.fillRect(0, 0, canvas.width, canvas.height);
  context.fillStyle = "#000";
  data.forEach((row, y) => row.forEach((dark, x) => {
    if (dark) context.fillRect(x * scale, y * scale, scale, scale);
  }));
}

/** What the user picked, chose as a folder, or dropped: each file with its path to send. */
function picked() {
  /** @type {{file: File, path: string}[]} */
  const chosen = [
    ...Array.from(the("files", HTMLInputElement).files || []).map((file) => ({ file, path: file.name })),
    ...Array.from(the("folder", HTMLInputElement).files || [])
      .map((file) => ({ file, path: file.webkitRelativePath || file.name })),
    ...dropped,
  ];
  return chosen;
}

async function send() {
  const chosen = picked();
  if (!chosen.length) throw new UserError("pick or drop one or more files or a folder to send first");
  /** @type {import("./transfer.js").Source[]} */
  const sources = chosen.map(({ file, path }) => ({
    name: path,
    size: file.size,
    read: async (from, to) => new Uint8Array(await file.slice(from, to).arrayBuffer()),
  }));
  entriesOf(sources); // a bad name stops here, before a code is shown
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
  drawQr(`${location.origin}${location.pathname}#${code}`);
  $("command").textContent = `p2pcp receive --server ${server} ${code}`;
  $("ticket").hidden = false;
  say(`Waiting for the receiver. Code: ${code}`);
  cleanups.push(() => {
    $("ticket").hidden = true;
  });
  /** @type {p2pcp.SealedChannel} */
  let box;
  for (;;) {
    await rendezvous.expect("peer_joined");
    say("Checking the code…");
    try {
      box = await handshake(rendezvous, code, p2pcp.SENDER);
      break;
    } catch (error) {
      if (!(error instanceof Reopened)) throw error;
      say("Someone connected with this code's number and left without trying the code; " +
        `still waiting (the code is still good). Code: ${code}`);
    }
  }
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
  const chunkSize = Math.min(pc.sctp && pc.sctp.maxMessageSize ? pc.sctp.maxMessageSize : 65536, 262144) - 1;
  const meter = new Meter(sources.length);
  await abortOnError(channel, () => sendFiles(channel, inbox, sources, {
    offered: () => say("Waiting for the receiver to accept…"),
    started: (total) => meter.start(total),
    sending: (source) => meter.next(source.name),
    progress: (done) => meter.update(done),
    finishing: () => say("Waiting for the receiver to verify…"),
  }, chunkSize));
  setState("done");
  say(`Done: ${countFiles(sources.length)} sent and verified by the receiver.`);
  dropped.length = 0;
  $("dropped").textContent = "";
  pc.close(); // the receiver said the last word (verified): close at once, as the CLI does
}

// -- wiring ---------------------------------------------------------------------------------------

$("receive-form").addEventListener("submit", (event) => {
  event.preventDefault();
  run(receive);
});
/** Files dropped on the page, with their paths (a dropped folder keeps its tree). */
/** @type {{file: File, path: string}[]} */
const dropped = [];

/** Every file below a dropped entry (a folder is walked; its entries come in batches). */
async function walk(/** @type {FileSystemEntry} */ entry, /** @type {string} */ prefix) {
  /** @type {{file: File, path: string}[]} */
  const found = [];
  const path = prefix + entry.name;
  if (entry.isFile) {
    const file = await new Promise((resolve, reject) => {
      /** @type {FileSystemFileEntry} */ (entry).file(resolve, reject);
    });
    found.push({ file: /** @type {File} */ (file), path });
  } else if (entry.isDirectory) {
    const reader = /** @type {FileSystemDirectoryEntry} */ (entry).createReader();
    for (;;) {
      /** @type {FileSystemEntry[]} */
      const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
      if (!batch.length) break;
      for (const child of batch) found.push(...await walk(child, `${path}/`));
    }
  }
  return found;
}

const drop = $("drop");
for (const type of ["dragenter", "dragover"]) {
  document.addEventListener(type, (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
}
document.addEventListener("dragleave", () => drop.classList.remove("over"));
document.addEventListener("drop", async (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  const items = Array.from(event.dataTransfer?.items || []);
  const entries = items.map((item) => item.webkitGetAsEntry()).filter((e) => e !== null);
  for (const entry of entries) dropped.push(...await walk(/** @type {FileSystemEntry} */ (entry), ""));
  if (!entries.length) {
    dropped.push(...Array.from(event.dataTransfer?.files || []).map((file) => ({ file, path: file.name })));
  }
  $("dropped").textContent = dropped.length ? `: ${countFiles(dropped.length)} ready to send` : "";
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
  buttons(false);
} else {
  removeOldParts();
  receiveFromFragment();
  window.addEventListener("hashchange", receiveFromFragment); // a code pasted into this tab
}
document.body.dataset.ready = "yes";

/**
 * `/#7-guitar-ocean` (the QR code `p2pcp send --qr` shows): fill in the code and receive. The
 * fragment never reaches the server; it is taken out of the address bar and history at once.
 */
function receiveFromFragment() {
  const code = decodeURIComponent(location.hash.slice(1)).trim();
  if (!code) return;
  history.replaceState(null, "", location.pathname + location.search);
  if (busy) return;
  the("code", HTMLInputElement).value = code;
  run(receive);
}
