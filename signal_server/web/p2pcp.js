// @ts-check
// The p2pcp protocol for the browser page (docs/protocol.md): SPAKE2 compatible byte for byte
// with the Python `spake2` package, key derivation and sealed signaling (WebCrypto), and the
// data channel's framing. No DOM and no network here: tests/js/ runs this file under Node
// against tests/vectors/pake.json, which the Python side produces.
import { ed25519, sha256 } from "./vendor/noble.js";

export { sha256 };
export const APP_ID = "p2pcp.dev/v1";
export const SENDER = "sender";
export const RECEIVER = "receiver";
export const PROTOCOL_VERSION = 2; // 2: the receiver sends sizes, never hashes (docs/protocol.md)
export const OLDEST_VERSION = 1;

const Point = ed25519.Point;
const L = Point.Fn.ORDER;
const SIDE_SYMMETRIC = 0x53; // "S"
const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });

// python-spake2's symmetric blinding element S: its arbitrary_element(b"symmetric") (HKDF-SHA256
// of the seed, then the first y at or after it that is on the curve, times the cofactor).
// tests/js/ checks it against the value in tests/vectors/pake.json, which Python computes.
export const S = Point.fromHex("6f00dae87c1be1a73b5922ef431cd8f57879569c222d22b1cd71e8546ab8e6f1");

export class CodeError extends Error {}

export function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function fromHex(text) {
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function toBase64(bytes) {
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text);
}

export function fromBase64(text) {
  if (typeof text !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4) {
    throw new CodeError("not base64");
  }
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

function bigEndian(bytes) {
  return bytes.length ? BigInt("0x" + hex(bytes)) : 0n;
}

function compareBytes(a, b) {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

function sameBytes(a, b) {
  return a.length === b.length && compareBytes(a, b) === 0;
}

async function hkdf(secret, info, length) {
  const key = await crypto.subtle.importKey("raw", secret, "HKDF", false, ["deriveBits"]);
  const bits = await crypto.subtle.deriveBits(
    { name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info: encoder.encode(info) },
    key,
    length * 8,
  );
  return new Uint8Array(bits);
}

async function sha256Once(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

/** password_to_scalar of python-spake2: HKDF-SHA256("SPAKE2 pw"), 48 bytes, big-endian, mod L. */
export async function passwordScalar(password) {
  return bigEndian(await hkdf(password, "SPAKE2 pw", 48)) % L;
}

/** random_scalar of python-spake2: 64 bytes of entropy, big-endian, mod L. */
export function entropyScalar(entropy) {
  return bigEndian(entropy) % L;
}

/**
 * One side of SPAKE2_Symmetric(password, idSymmetric=APP_ID). `entropy` (64 bytes) is for tests
 * only; the page leaves it to crypto.getRandomValues.
 */
export async function spake2Start(code, entropy = crypto.getRandomValues(new Uint8Array(64))) {
  const password = encoder.encode(code);
  const pw = await passwordScalar(password);
  let x = entropyScalar(entropy);
  if (x === 0n) x = 1n; // probability 2^-252; python-spake2 would fail later instead
  const element = Point.BASE.multiply(x).add(pw === 0n ? Point.ZERO : S.multiply(pw));
  const outbound = element.toBytes();
  const message = concat(new Uint8Array([SIDE_SYMMETRIC]), outbound);
  async function finish(inbound) {
    if (!(inbound instanceof Uint8Array) || inbound.length !== 33 || inbound[0] !== SIDE_SYMMETRIC) {
      throw new CodeError("the peer's key exchange message was malformed");
    }
    const body = inbound.slice(1);
    let peer;
    try {
      peer = Point.fromBytes(body);
    } catch {
      throw new CodeError("the peer's key exchange message was malformed");
    }
    if (peer.is0() || !peer.isTorsionFree() || sameBytes(peer.toBytes(), outbound)) {
      throw new CodeError("the peer's key exchange message was malformed");
    }
    const unblinded = pw === 0n ? peer : peer.subtract(S.multiply(pw));
    const shared = unblinded.multiply(x).toBytes();
    const [first, second] = [body, outbound].sort(compareBytes);
    const transcript = concat(
      await sha256Once(password),
      await sha256Once(encoder.encode(APP_ID)),
      first,
      second,
      shared,
    );
    return sha256Once(transcript);
  }
  return { message, finish };
}

/** HKDF-SHA256 subkey of the PAKE key for one purpose (p2pcp/pake.py derive_key). */
export function deriveKey(shared, purpose, length = 32) {
  return hkdf(shared, `${APP_ID} ${purpose}`, length);
}

export async function verificationString(shared) {
  return Array.from(await deriveKey(shared, "verify", 5), (b) => b.toString(16).padStart(2, "0"))
    .join("-");
}

function nonce(counter) {
  const out = new Uint8Array(12);
  new DataView(out.buffer).setBigUint64(4, BigInt(counter));
  return out;
}

/** Sealed signaling payloads for one role (p2pcp/pake.py SealedChannel). */
export class SealedChannel {
  static async forRole(/** @type {Uint8Array} */ shared, /** @type {string} */ role) {
    const other = role === SENDER ? RECEIVER : SENDER;
    return new SealedChannel(
      await aesKey(await deriveKey(shared, `seal:${role}`)),
      await aesKey(await deriveKey(shared, `seal:${other}`)),
    );
  }

  constructor(/** @type {CryptoKey} */ sendKey, /** @type {CryptoKey} */ recvKey) {
    this.sendKey = sendKey;
    this.recvKey = recvKey;
    this.sent = 0;
    this.received = 0;
  }

  async seal(payload) {
    const plain = encoder.encode(JSON.stringify(payload));
    const iv = nonce(this.sent++);
    const additionalData = encoder.encode(APP_ID);
    const box = await crypto.subtle.encrypt(
      { name: "AES-GCM", iv, additionalData },
      this.sendKey,
      plain,
    );
    return toBase64(new Uint8Array(box));
  }

  /** The next payload from the peer; null if it fails to open (wrong key or tampered). */
  async open(text) {
    try {
      const iv = nonce(this.received);
      const additionalData = encoder.encode(APP_ID);
      const plain = await crypto.subtle.decrypt(
        { name: "AES-GCM", iv, additionalData },
        this.recvKey,
        fromBase64(text),
      );
      const payload = JSON.parse(strictDecoder.decode(plain));
      if (payload === null || typeof payload !== "object" || Array.isArray(payload)) return null;
      this.received++;
      return payload;
    } catch {
      return null;
    }
  }
}

function aesKey(raw) {
  return crypto.subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt", "decrypt"]);
}

// -- codes ------------------------------------------------------------------------------------

/** Damerau-Levenshtein distance (adjacent transpositions count one), as p2pcp/code.py. */
export function editDistance(/** @type {string} */ a, /** @type {string} */ b) {
  /** @type {number[][]} */
  const rows = [Array.from({ length: b.length + 1 }, (_, j) => j)];
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      row[j] = Math.min(rows[i - 1][j] + 1, row[j - 1] + 1, rows[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        row[j] = Math.min(row[j], rows[i - 2][j - 2] + 1);
      }
    }
    rows.push(row);
  }
  return rows[a.length][b.length];
}

function sharedEnds(/** @type {string} */ a, /** @type {string} */ b) {
  let head = 0;
  while (head < a.length && head < b.length && a[head] === b[head]) head++;
  let tail = 0;
  while (tail < a.length - head && tail < b.length - head
    && a[a.length - 1 - tail] === b[b.length - 1 - tail]) tail++;
  return head + tail;
}

/** The code word the CLI would suggest for a mistyped one (tests/vectors/typos.json), or null. */
export function suggestWord(/** @type {string} */ word, /** @type {string[]} */ words) {
  let best = words[0];
  let bestKey = [Infinity, 0];
  for (const w of words) {
    const key = [editDistance(word, w), -sharedEnds(word, w)];
    if (key[0] < bestKey[0] || (key[0] === bestKey[0] && key[1] < bestKey[1])) {
      best = w;
      bestKey = key;
    }
  }
  if (bestKey[0] <= 2) return best;
  const starting = words.filter((w) => w.startsWith(word));
  return word.length >= 3 && starting.length ? starting[0] : null;
}

/** Parse a typed code as p2pcp/code.py does: case and blanks do not matter; every word must be
 * a code word, so a typo never burns the one guess a code allows. Throws Error with a message. */
export function parseCode(text, words) {
  const parts = text.trim().toLowerCase().replaceAll(" ", "-").split("-").filter((p) => p);
  if (!parts.length) throw new Error("no code given");
  if (!/^[0-9]{1,8}$/.test(parts[0])) {
    throw new Error(`the code must start with a number, like 7-${words[0]}-${words[1]}`);
  }
  const rest = parts.slice(1);
  if (rest.length !== 2) throw new Error("a code is a number and two words, like 7-guitar-ocean");
  for (const word of rest) {
    if (!words.includes(word)) {
      const hint = suggestWord(word, words);
      throw new Error(`'${word}' is not a code word${hint ? `: did you mean '${hint}'?` : ""}`);
    }
  }
  return { nameplate: parts[0], code: parts.join("-") };
}

/** A fresh code for `nameplate`: two words drawn uniformly (256 words: one random byte each). */
export function makeCode(nameplate, words) {
  const picks = crypto.getRandomValues(new Uint8Array(2));
  return [nameplate, words[picks[0]], words[picks[1]]].join("-");
}

// -- the data channel (docs/protocol.md section 3) --------------------------------------------

export const CONTROL = 0x00;
export const DATA = 0x01;
export const MAX_CONTROL = 256 * 1024;

export function controlFrame(message) {
  return concat(new Uint8Array([CONTROL]), encoder.encode(JSON.stringify(message)));
}

export function dataFrame(bytes) {
  return concat(new Uint8Array([DATA]), bytes);
}

export class ProtocolError extends Error {}

/** Split one frame into {control: object} or {data: Uint8Array}; ProtocolError if malformed. */
export function parseFrame(frame) {
  if (!(frame instanceof Uint8Array) || frame.length === 0) {
    throw new ProtocolError("the peer sent an empty or text frame");
  }
  if (frame[0] === DATA) return { data: frame.subarray(1) };
  if (frame[0] !== CONTROL || frame.length - 1 > MAX_CONTROL) {
    throw new ProtocolError("the peer sent a malformed frame");
  }
  let message;
  try {
    message = JSON.parse(strictDecoder.decode(frame.subarray(1)));
  } catch {
    throw new ProtocolError("the peer sent a malformed control message");
  }
  if (message === null || typeof message !== "object" || Array.isArray(message)) {
    throw new ProtocolError("the peer sent a control message that is not an object");
  }
  if (typeof message.type !== "string") throw new ProtocolError("a control message lacks its type");
  return { control: message };
}

export function isCount(value) {
  return Number.isSafeInteger(value) && value >= 0;
}

const WINDOWS_DEVICES = new Set(["con", "prn", "aux", "nul"]);
for (let i = 1; i <= 9; i++) WINDOWS_DEVICES.add(`com${i}`).add(`lpt${i}`);
const FORBIDDEN_CHARACTER = /[\p{Cc}\p{Cs}\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/u;

/** Why `path` is not a safe relative name to write, or null: the rules of p2pcp/files.py. */
export function nameProblem(path) {
  if (typeof path !== "string" || !path) return "an empty name";
  if (path.startsWith("/")) return "an absolute path";
  if (path.includes("\\")) return "a backslash";
  if (encoder.encode(path).length > 4096) return "a path that is too long";
  for (const part of path.split("/")) {
    if (part === "") return "an empty path component";
    if (part === "." || part === "..") return `a '${part}' component`;
    if (FORBIDDEN_CHARACTER.test(part)) return "a control character";
    if (/^[A-Za-z]:/.test(part)) return "a drive letter";
    if (part.endsWith(".") || part.endsWith(" ")) return "a trailing dot or space";
    if (WINDOWS_DEVICES.has(part.split(".", 1)[0].trimEnd().toLowerCase())) {
      return "a reserved device name";
    }
    if (encoder.encode(part).length > 255) return "a name component that is too long";
  }
  return null;
}

/** Throws ProtocolError unless every entry may be written as named: each name safe, no path
 * named twice (after NFC and case folding), no file where another entry needs a directory. */
export function validateEntries(entries) {
  const kinds = new Map();
  for (const entry of entries) {
    const problem = nameProblem(entry.path);
    if (problem) throw new ProtocolError(`unsafe offer: ${JSON.stringify(entry.path)} has ${problem}`);
    const key = entry.path.normalize("NFC").toLowerCase();
    if (kinds.has(key)) throw new ProtocolError(`unsafe offer: ${JSON.stringify(entry.path)} is named twice`);
    kinds.set(key, entry.kind);
  }
  for (const key of kinds.keys()) {
    let parent = key;
    while (parent.includes("/")) {
      parent = parent.slice(0, parent.lastIndexOf("/"));
      if (kinds.get(parent) === "file") {
        throw new ProtocolError(`unsafe offer: ${JSON.stringify(parent)} is both a file and a directory`);
      }
    }
  }
}

/** Check one offer entry's shape; returns a normalised entry or throws ProtocolError. */
export function checkEntry(entry) {
  if (entry === null || typeof entry !== "object") throw new ProtocolError("a bad offer entry");
  const { path, kind, size } = entry;
  if (kind !== "file" && kind !== "dir" && kind !== "text") {
    throw new ProtocolError("an offer entry of an unknown kind");
  }
  if (typeof path !== "string") throw new ProtocolError("an offer entry without a path");
  if (kind !== "dir" && !(size === null || isCount(size))) {
    throw new ProtocolError("an offer entry with a bad size");
  }
  return { path, kind, size: kind === "dir" ? 0 : size, executable: entry.executable === true };
}
