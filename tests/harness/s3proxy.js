'use strict';
// A loopback proxy between pgvault and the test S3 server (Ceph RGW),
// controlled by the tests. It sees every request, so it:
//  - injects faults by rule: 503 SlowDown / 500 InternalError answers,
//    connections reset in the middle of a request or response body, slow
//    answers, answers that never come (hang), any S3 error (error), a body
//    damaged in transit (corrupt);
//  - checks every request body against its Content-MD5 and
//    x-amz-content-sha256 as S3 does (400 BadDigest /
//    XAmzContentSHA256Mismatch, the request not passed on), so a test sees
//    how many bodies were checked;
//  - accounts for every multipart upload it sees (created, completed,
//    aborted); the server's own ListMultipartUploads stays the authority.
// Control (paths no bucket can have): POST /__proxy/rules with a JSON list
// of {op, action, rate, after, count, except, header} (a rule with header
// fires only on requests carrying it; actions: status503,
// status500, reset, slow with ms, hang, error with status/code/message,
// corrupt (with upstream: true the server, not the proxy, finds the damage),
// etag with mode "aws" or "wrong": the CompleteMultipartUpload
// answer carries the ETag AWS gives a multipart object, MD5 of the parts'
// binary MD5s + "-N", or a wrong one of that form); POST /__proxy/delay
// with {ms} delays every request (a distant server); GET /__proxy/stats;
// POST /__proxy/reset. The stats count requests per operation and per
// operation and path ("GetObject /bucket/key", "ListObjectsV2 /bucket"), the
// signing regions seen and the most requests of one operation in flight at
// once. With TLS_CERT and TLS_KEY in the environment it serves HTTPS.
// Prints "ready PORT" once it listens.
const http = require('http');
const https = require('https');
const fs = require('fs');
const crypto = require('crypto');

const upstream = new URL(process.argv[2] || '');
let rules = [];
let delay = 0; // ms added to every request
const freshStats = () => ({ requests: 0, injected: 0, ops: {}, digests_checked: 0, bad_digests: 0, regions: {},
  in_flight: {}, max_in_flight: {}, objects: {} });
let stats = freshStats();
const uploads = new Map(); // uploadId -> {bucket, key, id, initiated, state, parts: Map}

function opOf(req, url) {
  const q = url.searchParams;
  const parts = url.pathname.split('/').filter((p) => p.length > 0);
  const hasKey = parts.length > 1;
  switch (req.method) {
    case 'PUT':
      if (q.has('partNumber')) return 'UploadPart';
      return hasKey ? 'PutObject' : 'CreateBucket';
    case 'POST':
      if (q.has('uploads')) return 'CreateMultipartUpload';
      if (q.has('uploadId')) return 'CompleteMultipartUpload';
      if (q.has('delete')) return 'DeleteObjects';
      return 'Post';
    case 'DELETE':
      if (q.has('uploadId')) return 'AbortMultipartUpload';
      return hasKey ? 'DeleteObject' : 'DeleteBucket';
    case 'HEAD':
      return hasKey ? 'HeadObject' : 'HeadBucket';
    default:
      if (q.has('uploads')) return 'ListMultipartUploads';
      if (q.has('uploadId')) return 'ListParts';
      if (hasKey) return 'GetObject';
      return q.get('list-type') === '2' ? 'ListObjectsV2' : 'ListObjects';
  }
}

function xmlEscape(s) {
  return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function bucketKey(url) {
  const parts = url.pathname.split('/');
  const bucket = decodeURIComponent(parts[1] || '');
  const key = parts.slice(2).map(decodeURIComponent).join('/');
  return { bucket, key };
}

function sendXml(res, status, body) {
  res.writeHead(status, { 'Content-Type': 'application/xml', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

function errorXml(code, message) {
  return `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message>` +
    `<RequestId>proxy</RequestId></Error>`;
}

// A seeded generator (mulberry32) for the rules' rates, so a run's faults
// are the same each time: a test asserting that faults were injected cannot
// be failed by chance. Every new list of rules starts it again.
let seed = 1;
function random() {
  seed = (seed + 0x6d2b79f5) | 0;
  let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
  return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
}

// The rule that fires for this request, if any.
function pickRule(op, req) {
  for (const r of rules) {
    if (r.op !== '*' && r.op !== op) continue;
    if (r.except && r.except.includes(op)) continue;
    if (r.header && req.headers[r.header] === undefined) continue;
    r.seen = (r.seen || 0) + 1;
    if (r.seen <= (r.after || 0)) continue;
    if (r.count !== undefined && (r.fired || 0) >= r.count) continue;
    if (random() >= (r.rate === undefined ? 1 : r.rate)) continue;
    r.fired = (r.fired || 0) + 1;
    return r;
  }
  return null;
}

function drain(req, cb) {
  req.on('data', () => {});
  req.on('end', cb);
  req.on('error', cb);
}

// The multipart ETag as AWS computes it from the parts' MD5s.
function multipartEtag(u) {
  const md5s = [...u.parts.entries()].sort((a, b) => a[0] - b[0])
    .map(([, p]) => Buffer.from(String(p.etag).replace(/"/g, ''), 'hex'));
  return crypto.createHash('md5').update(Buffer.concat(md5s)).digest('hex') + '-' + md5s.length;
}

// Answers CompleteMultipartUpload with a multipart-style ETag in place of
// the test server's plain MD5 (the object itself is completed upstream).
function rewriteEtag(ures, res, url, rule) {
  const chunks = [];
  ures.on('data', (c) => chunks.push(c));
  ures.on('end', () => {
    let text = Buffer.concat(chunks).toString();
    const u = uploads.get(url.searchParams.get('uploadId'));
    if (ures.statusCode === 200 && u && !/<Error>/.test(text)) {
      u.state = 'completed';
      let etag = multipartEtag(u);
      if (rule.mode === 'wrong') etag = (etag[0] === '0' ? '1' : '0') + etag.slice(1);
      text = text.replace(/<ETag\/>|<ETag>[^<]*<\/ETag>/, `<ETag>&quot;${etag}&quot;</ETag>`);
    }
    const headers = { ...ures.headers, 'content-length': Buffer.byteLength(text) };
    delete headers['transfer-encoding'];
    res.writeHead(ures.statusCode, headers);
    res.end(text);
  });
  ures.on('error', () => res.destroy());
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 128 });

function forward(req, res, url, op, rule) {
  const { bucket, key } = bucketKey(url);
  const headers = { ...req.headers };
  const up = http.request({
    host: upstream.hostname, port: upstream.port, method: req.method,
    path: req.url, headers, agent,
  }, (ures) => {
    const chunks = [];
    const keep = op === 'CreateMultipartUpload' || op === 'CompleteMultipartUpload';
    if (rule && rule.action === 'etag' && op === 'CompleteMultipartUpload') return rewriteEtag(ures, res, url, rule);
    let sent = 0;
    const total = Number(ures.headers['content-length'] || 0);
    res.writeHead(ures.statusCode, ures.headers);
    ures.on('data', (c) => {
      if (keep) chunks.push(c);
      if (rule && rule.action === 'reset' && req.method === 'GET' && sent + c.length > total / 2) {
        const cut = Math.max(0, Math.floor(total / 2) - sent);
        if (cut > 0) res.write(c.subarray(0, cut));
        res.socket.destroy();
        ures.destroy();
        return;
      }
      sent += c.length;
      res.write(c);
    });
    ures.on('end', () => {
      res.end();
      if (ures.statusCode >= 300) return;
      const text = Buffer.concat(chunks).toString();
      if (op === 'CreateMultipartUpload') {
        const m = /<UploadId>([^<]+)<\/UploadId>/.exec(text);
        if (m) uploads.set(m[1], { bucket, key, id: m[1], initiated: new Date().toISOString(), state: 'open', parts: new Map() });
      } else if (op === 'CompleteMultipartUpload' && !/<Error>/.test(text)) {
        const u = uploads.get(url.searchParams.get('uploadId'));
        if (u) u.state = 'completed';
      } else if (op === 'AbortMultipartUpload') {
        const u = uploads.get(url.searchParams.get('uploadId'));
        if (u) u.state = 'aborted';
      } else if (op === 'UploadPart') {
        const u = uploads.get(url.searchParams.get('uploadId'));
        if (u) u.parts.set(Number(url.searchParams.get('partNumber')), { etag: ures.headers.etag, size: Number(req.headers['content-length'] || 0) });
      }
    });
    ures.on('error', () => res.destroy());
  });
  let rejected = false;
  up.on('error', () => { if (!rejected) res.destroy(); });
  let received = 0;
  const length = Number(req.headers['content-length'] || 0);
  const md5 = crypto.createHash('md5');
  const sha = crypto.createHash('sha256');
  let corrupted = false;
  req.on('data', (c) => {
    received += c.length;
    if (rule && rule.action === 'reset' && req.method !== 'GET' && received > length / 2) {
      up.destroy();
      req.socket.destroy();
      return;
    }
    if (rule && rule.action === 'corrupt' && !corrupted && c.length > 0) {
      c = Buffer.from(c);
      c[c.length >> 1] ^= 0x20; // one bit flipped on the way
      corrupted = true;
    }
    md5.update(c);
    sha.update(c);
    up.write(c);
  });
  req.on('end', () => {
    // What S3 does with a body before it stores it.
    const wantMd5 = req.headers['content-md5'];
    const wantSha = req.headers['x-amz-content-sha256'];
    let code = null;
    // upstream: true leaves the damaged body for the server to find
    if (rule && rule.action === 'corrupt' && rule.upstream) return up.end();
    if (wantMd5 && md5.digest('base64') !== wantMd5) code = 'BadDigest';
    else if (wantSha && /^[0-9a-f]{64}$/.test(wantSha) && sha.digest('hex') !== wantSha) code = 'XAmzContentSHA256Mismatch';
    if (code) {
      stats.bad_digests++;
      rejected = true;
      up.destroy();
      return sendXml(res, 400, errorXml(code, code === 'BadDigest'
        ? 'The Content-MD5 you specified did not match what we received.'
        : "The provided 'x-amz-content-sha256' header does not match what was computed."));
    }
    if (wantMd5 || (wantSha && /^[0-9a-f]{64}$/.test(wantSha))) stats.digests_checked++;
    up.end();
  });
}

function handle(req, res) {
  const url = new URL(req.url, 'http://proxy');
  if (url.pathname.startsWith('/__proxy/')) {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      if (url.pathname === '/__proxy/rules') {
        rules = JSON.parse(body || '[]');
        seed = 1;
      }
      if (url.pathname === '/__proxy/delay') delay = Number(JSON.parse(body || '{}').ms || 0);
      if (url.pathname === '/__proxy/reset') {
        rules = [];
        delay = 0;
        stats = freshStats();
        uploads.clear();
      }
      const list = [...uploads.values()].map((u) => ({ bucket: u.bucket, key: u.key, id: u.id, state: u.state, parts: u.parts.size }));
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ ...stats, uploads: list }));
    });
    return;
  }
  const op = opOf(req, url);
  stats.requests++;
  stats.ops[op] = (stats.ops[op] || 0) + 1;
  const object = `${op} ${decodeURIComponent(url.pathname).replace(/\/+$/, '')}`;
  stats.objects[object] = (stats.objects[object] || 0) + 1;
  // the signing region (Credential=KEY/DATE/REGION/s3/aws4_request)
  const region = /Credential=[^/]+\/\d+\/([^/]+)\//.exec(req.headers.authorization || '');
  if (region) stats.regions[region[1]] = (stats.regions[region[1]] || 0) + 1;
  // requests of each kind at once (--parallel)
  stats.in_flight[op] = (stats.in_flight[op] || 0) + 1;
  stats.max_in_flight[op] = Math.max(stats.max_in_flight[op] || 0, stats.in_flight[op]);
  let counted = true;
  const done = () => {
    if (counted) stats.in_flight[op]--;
    counted = false;
  };
  res.on('finish', done);
  res.on('close', done);
  const rule = pickRule(op, req);
  if (rule) stats.injected++;
  const act = () => {
    if (rule && rule.action === 'error') {
      return drain(req, () => sendXml(res, rule.status || 403, errorXml(rule.code || 'AccessDenied', rule.message || '')));
    }
    if (rule && (rule.action === 'status503' || rule.action === 'status500')) {
      return drain(req, () => {
        const headers = rule.retry_after ? { 'Retry-After': String(rule.retry_after) } : {};
        const body = rule.action === 'status503' ? errorXml('SlowDown', 'Please reduce your request rate.')
          : errorXml('InternalError', 'We encountered an internal error. Please try again.');
        res.writeHead(rule.action === 'status503' ? 503 : 500, { ...headers, 'Content-Type': 'application/xml',
          'Content-Length': Buffer.byteLength(body) });
        res.end(body);
      });
    }
    if (rule && rule.action === 'hang') return drain(req, () => {});
    return forward(req, res, url, op, rule);
  };
  const wait = (rule && rule.action === 'slow' ? rule.ms || 1500 : 0) + delay;
  if (wait > 0) setTimeout(act, wait);
  else act();
}

const server = process.env.TLS_CERT
  ? https.createServer({ cert: fs.readFileSync(process.env.TLS_CERT), key: fs.readFileSync(process.env.TLS_KEY) }, handle)
  : http.createServer(handle);
server.keepAliveTimeout = 30000;
server.listen(0, '127.0.0.1', () => console.log(`ready ${server.address().port}`));
const stop = () => {
  server.close(() => process.exit(0));
  server.closeAllConnections(); // answers held back by 'hang' included
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
