// The page's protocol code (signal_server/web/p2pcp.js) against the outputs of the Python side
// (tests/vectors/pake.json): SPAKE2 messages and keys, derived keys, sealed boxes. Run by
// tests/test_web.py (node --test), or alone: node --test tests/js/
import assert from "node:assert/strict";
import { webcrypto } from "node:crypto";
import { readFileSync } from "node:fs";
import { test } from "node:test";

globalThis.crypto ??= webcrypto; // Node 18 (Debian's) has WebCrypto, but not as a global

import * as p2pcp from "../../signal_server/web/p2pcp.js";
import { WORDS } from "../../signal_server/web/wordlist.js";

const vectors = JSON.parse(readFileSync(new URL("../vectors/pake.json", import.meta.url)));
const { fromHex, hex } = p2pcp;

test("the blinding element S is python-spake2's", () => {
  assert.equal(p2pcp.S.toHex(), vectors.S);
  assert.equal(p2pcp.APP_ID, vectors.app_id);
});

for (const [index, v] of vectors.cases.entries()) {
  test(`SPAKE2 case ${index}: messages and keys equal Python's`, async () => {
    const a = await p2pcp.spake2Start(v.code_a, fromHex(v.entropy_a));
    const b = await p2pcp.spake2Start(v.code_b, fromHex(v.entropy_b));
    assert.equal(hex(a.message), v.message_a);
    assert.equal(hex(b.message), v.message_b);
    const keyA = await a.finish(b.message);
    const keyB = await b.finish(a.message);
    assert.equal(hex(keyA), v.key_a);
    assert.equal(hex(keyB), v.key_b);
    assert.equal(keyA.length, 32);
    assert.equal(hex(await p2pcp.deriveKey(keyA, "seal:sender")), v.seal_sender);
    assert.equal(hex(await p2pcp.deriveKey(keyA, "seal:receiver")), v.seal_receiver);
    assert.equal(await p2pcp.verificationString(keyA), v.verify);
  });

  test(`sealing case ${index}: boxes equal Python's, and open only in order and with the key`, async () => {
    const key = fromHex(v.key_a);
    const sender = await p2pcp.SealedChannel.forRole(key, p2pcp.SENDER);
    assert.equal(await sender.seal(v.payload), v.sealed[0]);
    assert.equal(await sender.seal(v.payload), v.sealed[1]);
    const receiver = await p2pcp.SealedChannel.forRole(key, p2pcp.RECEIVER);
    assert.equal(await receiver.open(v.sealed[1]), null); // out of order
    assert.deepEqual(await receiver.open(v.sealed[0]), v.payload);
    assert.deepEqual(await receiver.open(v.sealed[1]), v.payload);
    const other = await p2pcp.SealedChannel.forRole(fromHex(v.key_b), p2pcp.RECEIVER);
    assert.equal(await other.open(v.sealed[0]) === null, v.key_a !== v.key_b);
  });
}

test("malformed, small-order and reflected SPAKE2 messages are refused", async () => {
  const a = await p2pcp.spake2Start("7-guitar-ocean");
  const bad = [
    new Uint8Array(33),
    a.message.slice(0, 32),
    Uint8Array.of(0x41, ...a.message.slice(1)), // side A, not symmetric
    Uint8Array.of(0x53, 1, ...new Uint8Array(31)), // the identity
    Uint8Array.of(0x53, ...p2pcp.fromHex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")), // order 8
    a.message, // our own message reflected
  ];
  for (const message of bad) {
    await assert.rejects(a.finish(message), p2pcp.CodeError, hex(message));
  }
});

test("codes parse as the CLI parses them", () => {
  assert.deepEqual(p2pcp.parseCode(" 7-Guitar-OCEAN ", WORDS), { nameplate: "7", code: "7-guitar-ocean" });
  assert.deepEqual(p2pcp.parseCode("7 guitar ocean", WORDS).code, "7-guitar-ocean");
  for (const bad of ["", "guitar-ocean", "7-guitar", "7-guitar-oceann", "123456789-guitar-ocean"]) {
    assert.throws(() => p2pcp.parseCode(bad, WORDS), Error, bad);
  }
  const code = p2pcp.makeCode("12", WORDS);
  assert.equal(p2pcp.parseCode(code, WORDS).code, code);
});

test("names are checked as p2pcp/files.py checks them", () => {
  for (const good of ["a.txt", "dir/b c.bin", "ünïcode/ok"]) assert.equal(p2pcp.nameProblem(good), null, good);
  const bad = ["", "/etc/passwd", "a/../b", "./a", "a//b", "a\\b", "c:x", "con.txt", "a.", "a ",
    "x\u0000", "x\u202e", "a".repeat(256)];
  for (const name of bad) assert.notEqual(p2pcp.nameProblem(name), null, JSON.stringify(name));
  assert.throws(() => p2pcp.validateEntries([{ path: "A", kind: "file" }, { path: "a", kind: "file" }]));
  assert.throws(() => p2pcp.validateEntries([{ path: "a", kind: "file" }, { path: "a/b", kind: "file" }]));
  p2pcp.validateEntries([{ path: "a", kind: "dir" }, { path: "a/b", kind: "file" }]);
});

test("frames round-trip and malformed frames are refused", () => {
  const frame = p2pcp.controlFrame({ type: "hello", protocol: "p2pcp", version: 1 });
  assert.deepEqual(p2pcp.parseFrame(frame).control, { type: "hello", protocol: "p2pcp", version: 1 });
  assert.deepEqual(p2pcp.parseFrame(p2pcp.dataFrame(Uint8Array.of(1, 2))).data, Uint8Array.of(1, 2));
  for (const bad of [new Uint8Array(0), Uint8Array.of(2), Uint8Array.of(0, 0x7b), p2pcp.controlFrame([1])]) {
    assert.throws(() => p2pcp.parseFrame(bad), p2pcp.ProtocolError);
  }
});

test("the page suggests the word the CLI suggests for every typo in tests/vectors/typos.json", () => {
  const typos = JSON.parse(readFileSync(new URL("../vectors/typos.json", import.meta.url)));
  const wrong = Object.entries(typos).filter(([typo, hint]) => p2pcp.suggestWord(typo, WORDS) !== hint);
  assert.deepEqual(wrong, []);
  assert.throws(() => p2pcp.parseCode("7-acorn-zebar", WORDS), /'zebar' is not a code word: did you mean 'zebra'\?/);
});
