// Upload one file with tus-js-client (Node) and print {"url": ...} as JSON.
//
//   node tus-upload.cjs '{"endpoint": "...", "path": "...", "metadata": {...}, ...}'
//
// Options: source "file" (fs.ReadStream, the default), "buffer" or "stream"
// (a plain Readable: needs chunkSize); chunkSize, parallelUploads,
// metadataForPartialUploads, uploadDataDuringCreation, uploadLengthDeferred,
// resumeUrl (uploadUrl).
"use strict";
const fs = require("fs");
const { Readable } = require("stream");
const tus = require("tus-js-client");

const options = JSON.parse(process.argv[2]);
const source = options.source || "file";
let input;
if (source === "buffer") {
  input = fs.readFileSync(options.path);
} else if (source === "stream") {
  input = Readable.from(fs.createReadStream(options.path));
} else {
  input = fs.createReadStream(options.path);
}

const settings = {
  endpoint: options.endpoint,
  metadata: options.metadata || {},
  retryDelays: [0, 200, 1000, 2000],
  onError(error) {
    process.stderr.write(`tus-js-client: ${error}\n`);
    process.exit(1);
  },
  onSuccess() {
    process.stdout.write(JSON.stringify({ url: upload.url }) + "\n");
  },
};
for (const key of [
  "chunkSize",
  "parallelUploads",
  "metadataForPartialUploads",
  "uploadDataDuringCreation",
  "uploadLengthDeferred",
]) {
  if (options[key] !== undefined) settings[key] = options[key];
}
if (options.resumeUrl) settings.uploadUrl = options.resumeUrl;
if (!settings.uploadLengthDeferred && source === "stream") {
  settings.uploadSize = fs.statSync(options.path).size;
}
const upload = new tus.Upload(input, settings);
upload.start();
