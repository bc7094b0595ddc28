// What the page takes from npm: Ed25519 group arithmetic for SPAKE2 and an incremental SHA-256
// for per-file hashes (WebCrypto has no streaming digest). Everything else is WebCrypto.
export { ed25519 } from "@noble/curves/ed25519.js";
export { sha256 } from "@noble/hashes/sha2.js";
