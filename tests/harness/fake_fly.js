'use strict';
// A fake Fly.io Machines API for the tests (the shapes fly-go's flaps client
// sends and reads): app secrets with versions, machines, leases with the
// fly-machine-lease-nonce header, machine updates with min_secrets_version,
// and wait. It records everything so tests can check what a deploy did.
// Errors are {"error": "..."} as the API answers them.
//
// usage: node fake_fly.js CONFIG.json   (see tests/harness/saas.lua)
const fs = require('fs');
const crypto = require('crypto');
const { serve } = require('./saas');

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const errorBody = (status, message) => ({ error: message });
const now = () => new Date().toISOString();
const hex = (n) => crypto.randomBytes(n).toString('hex');

// secrets: name -> { value, version, updated_at }; history keeps every value
// each version had, so a machine's view at its min_secrets_version is known.
let version = config.secrets_version || 1;
const secrets = {};
const history = [];
for (const [k, v] of Object.entries(config.secrets || {})) {
  secrets[k] = { value: v, updated_at: now() };
  history.push({ version, name: k, value: v });
}
const machineOf = (m) => ({
  id: m.id, name: m.name || m.id, state: m.state || 'started', region: m.region || 'ams',
  instance_id: hex(8).toUpperCase(), config: { image: 'registry.fly.io/app:deployment-1', env: {},
    metadata: { fly_platform_version: 'v2', fly_process_group: m.process_group || 'app' } },
  updates: [], lease: null, seen_secrets: { ...(config.secrets || {}) },
  created_at: now(), updated_at: now(),
});
const machines = (Array.isArray(config.machines) ? config.machines : []).map(machineOf);

function valueAt(name, v) {
  let out = null;
  for (const h of history) if (h.name === name && h.version <= v) out = h.value;
  return out;
}
function machineView(m) {
  return { id: m.id, name: m.name, state: m.state, region: m.region, instance_id: m.instance_id,
    config: m.config, created_at: m.created_at, updated_at: m.updated_at };
}
const digest = (v) => crypto.createHash('sha256').update(v).digest('hex').slice(0, 16);
const secretList = () => Object.entries(secrets).filter(([, s]) => s.value !== null)
  .map(([name, s]) => ({ name, digest: digest(s.value), updated_at: s.updated_at }));

function authorized(h) {
  const tok = config.token;
  const scheme = /^(fm1r|fm1a|fm2)_/.test(tok) ? 'FlyV1' : 'Bearer';
  return h.authorization === `${scheme} ${tok}`;
}

// fault "lease_held": the lease is held by someone else for this call.
function handler(call, fault) {
  if (!authorized(call.headers)) return { status: 401, body: errorBody(401, 'unauthorized') };
  const m = call.path.match(/^\/v1\/apps\/([^/]+)\/(secrets|machines)(?:\/([^/]+))?(?:\/([a-z]+))?$/);
  if (!m || m[1] !== config.app) return { status: 404, body: errorBody(404, 'app not found') };
  const [, , kind, id, sub] = m;
  if (kind === 'secrets') {
    if (id) return { status: 404, body: errorBody(404, 'not faked') };
    if (call.method === 'GET') return { status: 200, body: { secrets: secretList() } };
    if (call.method !== 'POST' || !call.body || typeof call.body.values !== 'object') {
      return { status: 400, body: errorBody(400, 'expected {"values": {...}}') };
    }
    version += 1;
    for (const [k, v] of Object.entries(call.body.values)) {
      if (v !== null && typeof v !== 'string') return { status: 400, body: errorBody(400, `bad value for ${k}`) };
      secrets[k] = { value: v, updated_at: now() };
      history.push({ version, name: k, value: v });
    }
    return { status: 200, body: { secrets: secretList(), version } };
  }
  if (!id) {
    if (call.method !== 'GET') return { status: 405, body: errorBody(405, 'not faked') };
    return { status: 200, body: machines.map(machineView) };
  }
  const mach = machines.find((x) => x.id === id);
  if (!mach) return { status: 404, body: errorBody(404, 'machine not found') };
  const nonce = call.headers['fly-machine-lease-nonce'];
  if (sub === 'lease') return lease(call, mach, nonce, fault);
  if (sub === 'wait') {
    const want = [].concat(call.query.state || 'started');
    if (want.includes(mach.state)) return { status: 200, body: { ok: true } };
    return { status: 408, body: errorBody(408, `machine is ${mach.state}`) };
  }
  if (!sub && call.method === 'GET') return { status: 200, body: machineView(mach) };
  if (!sub && call.method === 'POST') return update(call, mach, nonce);
  return { status: 404, body: errorBody(404, 'not faked') };
}

function lease(call, mach, nonce, fault) {
  const held = mach.lease && mach.lease.expires_at > Date.now() / 1000;
  if (call.method === 'POST') {
    if (fault === 'lease_held' || (held && mach.lease.nonce !== nonce)) {
      return { status: 409, body: errorBody(409, 'lease currently held by another client') };
    }
    const ttl = Number(call.query.ttl || 30);
    mach.lease = { nonce: nonce || hex(12), expires_at: Math.floor(Date.now() / 1000) + ttl, owner: 'test@fake',
      version: hex(8) };
    return { status: 200, body: { status: 'success', data: mach.lease } };
  }
  if (call.method === 'DELETE') {
    if (!held || mach.lease.nonce !== nonce) return { status: 409, body: errorBody(409, 'lease not found') };
    mach.lease = null;
    return { status: 200, body: {} };
  }
  if (call.method === 'GET') {
    return held ? { status: 200, body: { status: 'success', data: mach.lease } }
      : { status: 404, body: errorBody(404, 'lease not found') };
  }
  return { status: 405, body: errorBody(405, 'not faked') };
}

function update(call, mach, nonce) {
  const held = mach.lease && mach.lease.expires_at > Date.now() / 1000;
  if (!held || mach.lease.nonce !== nonce) {
    return { status: 412, body: errorBody(412, 'machine lease nonce is missing or does not match') };
  }
  const b = call.body || {};
  if (!b.config || typeof b.config !== 'object') return { status: 400, body: errorBody(400, 'config is required') };
  const min = b.min_secrets_version;
  if (min !== undefined && (!Number.isInteger(min) || min > version)) {
    return { status: 400, body: errorBody(400, `min_secrets_version ${min} is not known`) };
  }
  mach.config = b.config;
  mach.instance_id = hex(8).toUpperCase();
  mach.updated_at = now();
  const seen = {};
  for (const name of Object.keys(secrets)) {
    const v = valueAt(name, Math.max(min || 0, version));
    if (v !== null) seen[name] = v;
  }
  mach.seen_secrets = seen;
  mach.state = b.skip_launch ? 'stopped' : 'started';
  mach.updates.push({ min_secrets_version: min === undefined ? null : min, skip_launch: !!b.skip_launch,
    region: b.region || null });
  return { status: 200, body: machineView(mach) };
}

async function control(what, body) {
  if (what === 'reset') {
    // body: { secrets: {NAME: value}, machines: [{ id, state }] }
    version += 1;
    for (const k of Object.keys(secrets)) delete secrets[k];
    for (const [k, v] of Object.entries((body && body.secrets) || {})) {
      secrets[k] = { value: v, updated_at: now() };
      history.push({ version, name: k, value: v });
    }
    machines.splice(0, machines.length, ...(Array.isArray(body && body.machines) ? body.machines : []).map(machineOf));
    for (const m of machines) m.seen_secrets = { ...((body && body.secrets) || {}) };
    return { ok: true, version };
  }
  if (what === 'state') {
    const values = {};
    for (const [k, s] of Object.entries(secrets)) if (s.value !== null) values[k] = s.value;
    return { version, secrets: values, machines: machines.map((m) => ({ id: m.id, state: m.state,
      updates: m.updates, lease: m.lease && m.lease.expires_at > Date.now() / 1000 ? m.lease.nonce : null,
      seen_secrets: m.seen_secrets })) };
  }
  throw new Error(`unknown control ${what}`);
}

serve({ name: 'fake fly', handler, control, errorBody });
