// The QR code the page draws for its own address with a code (a phone scans it to receive).
export { encode } from "uqr";
