'use strict';
// A scriptable HTTP(S) server for the tests of pgvault.http and of what is
// built on it (notifications, webhooks). Prints "ready PORT" once it listens;
// HTTPS when TLS_CERT and TLS_KEY name PEM files. Stops on SIGTERM/SIGINT.
//
// Control (same port, path prefix /__control/):
//   POST /__control/routes  [{method, path, responses: [...]}, ...] replaces the routes;
//                           path is exact, or a prefix when it ends with '*'.
//                           Each response: {status, headers, body | json, delay_ms,
//                           action: "reset" (drop the connection) | "hang" (never answer)}.
//                           Responses are used in order; the last one repeats.
//   GET  /__control/requests every request received so far (method, url, headers, body)
//   POST /__control/reset   forget routes and requests
// Unrouted requests get 404 {"message": "no route for METHOD PATH"}.
const http = require('http');
const https = require('https');
const fs = require('fs');

let routes = [];
let requests = [];
const hung = new Set();

function findRoute(method, path) {
  for (const r of routes) {
    if (r.method && r.method !== method) continue;
    const p = r.path || '*';
    const match = p.endsWith('*') ? path.startsWith(p.slice(0, -1)) : path === p;
    if (match) return r;
  }
  return null;
}

function nextResponse(route) {
  const list = route.responses || [{ status: 200 }];
  route.used = route.used || 0;
  const resp = list[Math.min(route.used, list.length - 1)];
  route.used++;
  return resp;
}

function send(res, status, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function control(req, res, path, body) {
  if (path === '/__control/routes' && req.method === 'POST') {
    routes = JSON.parse(body.toString() || '[]');
    return send(res, 200, { routes: routes.length });
  }
  if (path === '/__control/requests') return send(res, 200, requests);
  if (path === '/__control/reset') {
    routes = [];
    requests = [];
    return send(res, 200, {});
  }
  return send(res, 404, { message: 'unknown control ' + path });
}

function answer(req, res, body) {
  const url = new URL(req.url, 'http://x');
  if (url.pathname.startsWith('/__control/')) return control(req, res, url.pathname, body);
  requests.push({ method: req.method, url: req.url, path: url.pathname, headers: req.headers,
    body: body.toString('utf8') });
  const route = findRoute(req.method, url.pathname);
  if (!route) return send(res, 404, { message: `no route for ${req.method} ${url.pathname}` });
  const r = nextResponse(route);
  const respond = () => {
    if (r.action === 'reset') return req.socket.destroy();
    if (r.action === 'hang') {
      hung.add(req.socket);
      return undefined;
    }
    const headers = Object.assign({}, r.headers || {});
    let out = r.body || '';
    if (r.json !== undefined) {
      out = JSON.stringify(r.json);
      if (!Object.keys(headers).some((h) => h.toLowerCase() === 'content-type')) {
        headers['content-type'] = 'application/json';
      }
    }
    res.writeHead(r.status || 200, headers);
    return res.end(req.method === 'HEAD' ? undefined : out);
  };
  if (r.delay_ms) setTimeout(respond, r.delay_ms);
  else respond();
  return undefined;
}

function handler(req, res) {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => answer(req, res, Buffer.concat(chunks)));
}

const tls = process.env.TLS_CERT && process.env.TLS_KEY;
const server = tls
  ? https.createServer({ cert: fs.readFileSync(process.env.TLS_CERT), key: fs.readFileSync(process.env.TLS_KEY) },
    handler)
  : http.createServer(handler);
server.keepAliveTimeout = 2000;
server.listen(Number(process.env.HTTP_TEST_PORT || 0), '127.0.0.1', () => {
  console.log(`ready ${server.address().port}`);
});
const stop = () => {
  for (const s of hung) s.destroy();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 500).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
