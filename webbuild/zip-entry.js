// The streamed .zip in which the page saves a received folder (never held whole in memory).
export { downloadZip } from "client-zip";
