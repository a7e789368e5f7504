'use strict';
// What the fake SaaS servers (fake_neon.js, fake_fly.js) share: an HTTP
// server on a free loopback port that logs every call, applies fault rules,
// and answers the test's /_control/ requests (calls, faults, state).
// Prints "ready PORT" once it listens; stops on SIGTERM/SIGINT.
const http = require('http');

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

// A fault rule: { method, path (a RegExp source matched against the path),
// skip (matching calls let through first, default 0), times (how many
// matching calls it hits, default 1), action }. The action is generic
// ({ status, body }: answer that instead of doing the call; "drop_before":
// close the connection without doing it; "drop_after": do it, then close the
// connection without answering) or one the server understands itself.
class Faults {
  constructor() {
    this.rules = [];
    this.fired = [];
  }
  set(rules) {
    this.rules = (Array.isArray(rules) ? rules : []).map((r) => ({ skip: 0, times: 1, ...r, re: new RegExp(r.path || '.') }));
  }
  take(method, path) {
    for (const r of this.rules) {
      if (r.times <= 0) continue;
      if (r.method && r.method !== method) continue;
      if (!r.re.test(path)) continue;
      if (r.skip > 0) {
        r.skip -= 1;
        continue;
      }
      r.times -= 1;
      this.fired.push({ method, path, action: r.action });
      return r.action;
    }
    return null;
  }
}

// handler(call, fault) -> { status, body, headers } where call is
// { method, path, query, headers, body (parsed JSON or null), raw } and fault
// the action of a matched rule that is not generic. control(name, body) ->
// object answers /_control/NAME beyond calls and faults.
function serve({ name, handler, control, errorBody }) {
  const calls = [];
  const faults = new Faults();
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://fake');
    const raw = await readBody(req);
    const send = (status, body, headers) => {
      const text = body === undefined || body === null ? '' : JSON.stringify(body);
      res.writeHead(status, { 'content-type': 'application/json', ...(headers || {}) });
      res.end(text);
    };
    if (url.pathname.startsWith('/_control/')) {
      const what = url.pathname.slice('/_control/'.length);
      try {
        const body = raw ? JSON.parse(raw) : null;
        if (what === 'calls') return send(200, calls);
        if (what === 'faults') {
          faults.set(body || []);
          return send(200, { ok: true });
        }
        if (what === 'fired') return send(200, faults.fired);
        if (what === 'clear') {
          calls.length = 0;
          return send(200, { ok: true });
        }
        if (what === 'reset') {
          calls.length = 0;
          faults.set([]);
        }
        return send(200, await control(what, body));
      } catch (e) {
        return send(400, { error: String(e && e.stack || e) });
      }
    }
    let body = null;
    try {
      body = raw ? JSON.parse(raw) : null;
    } catch (e) {
      body = undefined;
    }
    const call = {
      method: req.method, path: url.pathname, query: Object.fromEntries(url.searchParams),
      headers: req.headers, body, raw,
    };
    const record = { method: req.method, path: url.pathname, query: call.query, body, at: Date.now() };
    calls.push(record);
    const fault = faults.take(req.method, url.pathname);
    if (fault === 'drop_before') {
      record.status = 'dropped';
      req.socket.destroy();
      return;
    }
    if (fault && typeof fault === 'object' && fault.status) {
      record.status = fault.status;
      record.fault = true;
      return send(fault.status, fault.body || errorBody(fault.status, 'injected failure'), fault.headers);
    }
    let out;
    try {
      out = await handler(call, fault);
    } catch (e) {
      out = { status: 500, body: errorBody(500, `${name}: ${e && e.stack || e}`) };
    }
    record.status = out.status;
    if (fault === 'drop_after') {
      record.dropped = true;
      req.socket.destroy();
      return;
    }
    send(out.status, out.body, out.headers);
  });
  server.listen(0, '127.0.0.1', () => console.log(`ready ${server.address().port}`));
  const stop = () => server.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  return server;
}

module.exports = { serve };
