// Writes the C2SP CCTV age test vectors (npm cctv-age, pinned in
// package-lock.json) into DIR: NAME.meta (the textual header of the vector)
// and NAME.age (the age file, inflated when the vector is zlib-compressed).
// Usage: node tests/harness/cctv_extract.mjs DIR
import * as vectors from 'cctv-age';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';

const dir = process.argv[2];
if (!dir) {
  console.error('usage: node cctv_extract.mjs DIR');
  process.exit(2);
}
let count = 0;
for (const [name, bytes] of Object.entries(vectors)) {
  if (!(bytes instanceof Uint8Array)) continue;
  const buf = Buffer.from(bytes);
  const split = buf.indexOf('\n\n');
  if (split < 0) throw new Error(`vector ${name} has no header`);
  const meta = buf.subarray(0, split + 1).toString('utf8');
  let body = buf.subarray(split + 2);
  if (/^compressed: zlib$/m.test(meta)) body = zlib.inflateSync(body);
  fs.writeFileSync(path.join(dir, name + '.meta'), meta);
  fs.writeFileSync(path.join(dir, name + '.age'), body);
  count++;
}
console.log(count);
