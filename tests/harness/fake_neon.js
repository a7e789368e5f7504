'use strict';
// A fake Neon API v2 for the tests, built from the vendor's OpenAPI spec
// (@neondatabase/api-client's public-v2-for-users.gen.yaml, pinned in
// package.json). Every request is routed and validated against the spec, and
// so is every response this fake sends: a mismatch either way is recorded as
// a violation, which fails the test. Its databases are real databases on the
// suite's PostgreSQL (changed through psql as the superuser, over the socket);
// its endpoints have a direct host and a "-pooler" host (a real PgBouncer the
// test harness starts). Changes run as operations (scheduling -> running ->
// finished), and while one runs, other changes get 423 Locked.
//
// usage: node fake_neon.js CONFIG.json   (see tests/harness/saas.lua)
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const { execFile } = require('child_process');
const OpenAPIBackend = require('openapi-backend').default;
const addFormats = require('ajv-formats');
const { serve } = require('./saas');

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const specPath = path.join(path.dirname(require.resolve('@neondatabase/api-client/package.json')),
  'public-v2-for-users.gen.yaml');

const now = () => new Date().toISOString().replace(/\.\d+Z$/, 'Z');
const requestId = () => crypto.randomUUID();
const errorBody = (status, message, code) => ({ code: code || '', message, request_id: requestId() });

// The state the control plane shows; the databases are also real ones.
const project = config.project_id;
const branches = config.branches.map((b) => ({ ...b, created_at: now(), updated_at: now() }));
const endpoints = branches.map((b) => ({
  id: b.endpoint, branch_id: b.id, host: `${b.endpoint}.${config.host_suffix}`, created_at: now(), updated_at: now(),
}));
const configuredRoles = config.roles.slice();
const databases = []; // { id, branch_id, name, owner_name, created_at, updated_at }
let nextDbId = 100000;
for (const d of Array.isArray(config.databases) ? config.databases : []) {
  databases.push({ id: nextDbId++, branch_id: d.branch || branches[0].id, name: d.name, owner_name: d.owner,
    created_at: now(), updated_at: now() });
}
const operations = []; // newest last
const violations = [];
const stepMs = config.operation_step_ms || 40;

function psql(sql) {
  return new Promise((resolve) => {
    const pg = config.pg;
    execFile(path.join(pg.bindir, 'psql'), ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', pg.socket_dir, '-p',
      String(pg.port), '-U', 'postgres', '-d', 'postgres', '-c', sql], { timeout: 60000 },
    (err, stdout, stderr) => resolve(err ? (stderr || String(err)).trim() : null));
  });
}
const ident = (s) => '"' + s.replace(/"/g, '""') + '"';

function branchOf(id) { return branches.find((b) => b.id === id); }
function dbOf(branchId, name) { return databases.find((d) => d.branch_id === branchId && d.name === name); }
function running() { return operations.some((o) => !['finished', 'failed', 'error', 'cancelled', 'skipped'].includes(o.status)); }

function branchView(b) {
  return {
    id: b.id, project_id: project, name: b.name, current_state: 'ready', state_changed_at: b.created_at,
    logical_size: 30000000, creation_source: 'console', default: !!b.default, protected: false,
    cpu_used_sec: 0, active_time_seconds: 0, compute_time_seconds: 0, written_data_bytes: 0,
    data_transfer_bytes: 0, created_at: b.created_at, updated_at: b.updated_at, init_source: 'parent-data',
  };
}
function endpointView(e) {
  return {
    host: e.host, id: e.id, project_id: project, branch_id: e.branch_id, autoscaling_limit_min_cu: 0.25,
    autoscaling_limit_max_cu: 1, region_id: config.region_id, type: 'read_write', current_state: 'active',
    settings: { pg_settings: {} }, pooler_enabled: false, pooler_mode: 'transaction', disabled: false,
    passwordless_access: false, creation_source: 'console', created_at: e.created_at, updated_at: e.updated_at,
    proxy_host: config.host_suffix, suspend_timeout_seconds: 0, provisioner: 'k8s-neonvm',
  };
}
const dbView = (d) => ({ id: d.id, branch_id: d.branch_id, name: d.name, owner_name: d.owner_name,
  created_at: d.created_at, updated_at: d.updated_at });
const opView = (o) => {
  const v = { id: o.id, project_id: project, branch_id: o.branch_id, endpoint_id: o.endpoint_id, action: o.action,
    status: o.status, failures_count: o.failures_count, created_at: o.created_at, updated_at: o.updated_at,
    total_duration_ms: o.total_duration_ms };
  if (o.error) v.error = o.error;
  return v;
};

// An operation that applies `effect` (SQL, then a change of the control
// plane's state) when it gets to run; `undo` puts the state back when it
// fails. fault "op_failed" / "op_error" makes it end that way.
function startOperation(branchId, effect, undo, fault) {
  const ep = endpoints.find((e) => e.branch_id === branchId);
  const op = { id: crypto.randomUUID(), branch_id: branchId, endpoint_id: ep.id, action: 'apply_config',
    status: 'scheduling', failures_count: 0, created_at: now(), updated_at: now(), total_duration_ms: 0 };
  operations.push(op);
  const started = Date.now();
  const set = (status, error) => {
    op.status = status;
    op.updated_at = now();
    op.total_duration_ms = Date.now() - started;
    if (error) op.error = error;
  };
  setTimeout(() => {
    set('running');
    setTimeout(async () => {
      if (fault === 'op_failed' || fault === 'op_error') {
        undo();
        op.failures_count = 1;
        return set(fault === 'op_failed' ? 'failed' : 'error', 'injected failure of the operation');
      }
      const err = await effect();
      if (err) {
        undo();
        op.failures_count = 1;
        return set('failed', err);
      }
      set('finished');
    }, stepMs);
  }, stepMs);
  return op;
}

const handlers = {
  listProjectBranches: () => ({ status: 200, body: { branches: branches.map(branchView), annotations: {} } }),
  getProjectBranch: (c, p) => {
    const b = branchOf(p.branch_id);
    return b ? { status: 200, body: { branch: branchView(b), annotation: { object: { type: 'console/branch', id: b.id },
      value: {} } } } : notFound('branch not found');
  },
  listProjectBranchEndpoints: (c, p) => ({ status: 200,
    body: { endpoints: endpoints.filter((e) => e.branch_id === p.branch_id).map(endpointView) } }),
  listProjectBranchDatabases: (c, p) => branchOf(p.branch_id)
    ? { status: 200, body: { databases: databases.filter((d) => d.branch_id === p.branch_id).map(dbView) } }
    : notFound('branch not found'),
  getProjectBranchDatabase: (c, p) => {
    const d = dbOf(p.branch_id, p.database_name);
    return d ? { status: 200, body: { database: dbView(d) } } : notFound('database not found');
  },
  listProjectBranchRoles: (c, p) => ({ status: 200, body: { roles: config.roles.map((r) => ({ branch_id: p.branch_id,
    name: r.name, protected: false, created_at: now(), updated_at: now() })) } }),
  getProjectBranchRolePassword: (c, p) => {
    const r = config.roles.find((x) => x.name === p.role_name);
    return r ? { status: 200, body: { password: r.password } } : notFound('role not found');
  },
  getConnectionURI: (c, p, q) => {
    const b = q.branch_id ? branchOf(q.branch_id) : branches.find((x) => x.default);
    if (!b) return notFound('branch not found');
    const d = dbOf(b.id, q.database_name);
    const r = config.roles.find((x) => x.name === q.role_name);
    if (!d || !r) return notFound(!d ? 'database not found' : 'role not found');
    const ep = endpoints.find((e) => e.branch_id === b.id);
    const host = q.pooled === 'true' || q.pooled === true ? ep.host.replace(ep.id, `${ep.id}-pooler`) : ep.host;
    const uri = `postgresql://${encodeURIComponent(r.name)}:${encodeURIComponent(r.password)}@${host}:${config.pg.port}` +
      `/${encodeURIComponent(d.name)}${config.uri_params ? '?' + config.uri_params : ''}`;
    return { status: 200, body: { uri } };
  },
  getProjectOperation: (c, p) => {
    const o = operations.find((x) => x.id === p.operation_id);
    return o ? { status: 200, body: { operation: opView(o) } } : notFound('operation not found');
  },
  listProjectOperations: () => ({ status: 200,
    body: { operations: operations.slice().reverse().map(opView) } }),
  createProjectBranchDatabase: (c, p, q, fault) => {
    if (!branchOf(p.branch_id)) return notFound('branch not found');
    const { name, owner_name: owner } = c.body.database;
    if (dbOf(p.branch_id, name)) return conflict(`database "${name}" already exists`);
    if (!config.roles.find((r) => r.name === owner)) return notFound('role not found');
    const d = { id: nextDbId++, branch_id: p.branch_id, name, owner_name: owner, created_at: now(), updated_at: now() };
    databases.push(d);
    const op = startOperation(p.branch_id, () => psql(`CREATE DATABASE ${ident(name)} OWNER ${ident(owner)}`),
      () => databases.splice(databases.indexOf(d), 1), fault);
    return { status: 201, body: { database: dbView(d), operations: [opView(op)] } };
  },
  updateProjectBranchDatabase: (c, p, q, fault) => {
    const d = dbOf(p.branch_id, p.database_name);
    if (!d) return notFound('database not found');
    const want = c.body.database;
    const before = { name: d.name, owner_name: d.owner_name };
    if (want.name && want.name !== d.name && dbOf(p.branch_id, want.name)) {
      return conflict(`database "${want.name}" already exists`);
    }
    const sql = [];
    if (want.name && want.name !== d.name) sql.push(`ALTER DATABASE ${ident(d.name)} RENAME TO ${ident(want.name)}`);
    const newName = want.name || d.name;
    if (want.owner_name && want.owner_name !== d.owner_name) {
      sql.push(`ALTER DATABASE ${ident(newName)} OWNER TO ${ident(want.owner_name)}`);
    }
    Object.assign(d, { name: newName, owner_name: want.owner_name || d.owner_name, updated_at: now() });
    const op = startOperation(p.branch_id, async () => {
      for (const s of sql) {
        const err = await psql(s);
        if (err) return err;
      }
      return null;
    }, () => Object.assign(d, before), fault);
    return { status: 200, body: { database: dbView(d), operations: [opView(op)] } };
  },
  deleteProjectBranchDatabase: (c, p, q, fault) => {
    const d = dbOf(p.branch_id, p.database_name);
    if (!d) return { status: 204 };
    databases.splice(databases.indexOf(d), 1);
    const op = startOperation(p.branch_id, () => psql(`DROP DATABASE ${ident(d.name)} WITH (FORCE)`),
      () => databases.push(d), fault);
    return { status: 200, body: { database: dbView(d), operations: [opView(op)] } };
  },
};
function notFound(message) { return { status: 404, body: errorBody(404, message) }; }
function conflict(message) { return { status: 409, body: errorBody(409, message) }; }

const api = new OpenAPIBackend({
  definition: specPath, apiRoot: '/api/v2', strict: true, validate: true, quick: true,
  customizeAjv: (ajv) => {
    addFormats(ajv);
    return ajv;
  },
});

async function handler(call, fault) {
  const req = { method: call.method, path: call.path, query: call.query, headers: call.headers, body: call.body };
  let operation;
  try {
    operation = api.router.matchOperation(req, true);
  } catch (e) {
    operation = null;
  }
  if (!operation) {
    violations.push({ kind: 'request', what: `${call.method} ${call.path}`, errors: ['no such operation in the spec'] });
    return { status: 404, body: errorBody(404, 'no such route') };
  }
  const v = api.validateRequest(req, operation);
  if (!v.valid) {
    violations.push({ kind: 'request', what: operation.operationId, errors: v.errors });
    return { status: 400, body: errorBody(400, `request does not match the spec: ${JSON.stringify(v.errors)}`) };
  }
  const auth = call.headers.authorization || '';
  if (auth !== `Bearer ${config.api_key}`) {
    return check(operation, { status: 401, body: errorBody(401, 'authorization failed') });
  }
  const params = api.router.parseRequest(req, operation).params;
  if (params.project_id !== undefined && params.project_id !== project) {
    return check(operation, notFound('not found'));
  }
  const isWrite = call.method !== 'GET';
  if (isWrite && running() && fault !== 'ignore_lock') {
    return check(operation, { status: 423, body: errorBody(423,
      'project already has running operations, scheduling of new ones is prohibited') });
  }
  const h = handlers[operation.operationId];
  if (!h) return check(operation, { status: 501, body: errorBody(501, `${operation.operationId} is not faked`) });
  const out = await h(call, params, call.query, fault);
  if (fault === 'corrupt_response') corrupt(out.body);
  return check(operation, out);
}

// Breaks a response the way a careless fake would (a required field gone),
// so the tests can see that response validation catches it.
function corrupt(body) {
  for (const v of Object.values(body || {})) {
    const target = Array.isArray(v) ? v[0] : v;
    if (target && typeof target === 'object') {
      delete target[Object.keys(target)[0]];
      return;
    }
  }
}

function check(operation, out) {
  if (out.status !== 204) {
    const v = api.validateResponse(out.body, operation, out.status);
    if (v.errors && v.errors.length) {
      violations.push({ kind: 'response', what: `${operation.operationId} ${out.status}`, errors: v.errors });
    }
  }
  out.headers = { 'x-request-id': requestId() };
  return out;
}

async function control(what, body) {
  if (what === 'violations') return violations;
  if (what === 'state') {
    return { databases: databases.map(dbView), operations: operations.map(opView), running: running() };
  }
  if (what === 'reset') {
    // body: { databases: [{ name, owner, branch }] } replaces the control
    // plane's list (branch: an id, default the first); default_branch (an
    // id) makes that branch the project's default, else the configured one is;
    // roles ([{ name, password }]) are added to the configured ones
    config.roles = configuredRoles.concat(Array.isArray(body && body.roles) ? body.roles : []);
    databases.splice(0, databases.length);
    operations.splice(0, operations.length);
    violations.length = 0;
    const want = body && body.default_branch;
    if (want && !branchOf(want)) throw new Error(`no branch ${want}`);
    for (const b of branches) b.default = want ? b.id === want : !!config.branches.find((c) => c.id === b.id).default;
    for (const d of Array.isArray(body && body.databases) ? body.databases : []) {
      if (d.branch && !branchOf(d.branch)) throw new Error(`no branch ${d.branch}`);
      databases.push({ id: nextDbId++, branch_id: d.branch || branches[0].id, name: d.name, owner_name: d.owner,
        created_at: now(), updated_at: now() });
    }
    return { ok: true };
  }
  if (what === 'settle') {
    while (running()) await new Promise((r) => setTimeout(r, 10));
    return { ok: true };
  }
  throw new Error(`unknown control ${what}`);
}

api.init().then(() => serve({ name: 'fake neon', handler, control, errorBody }), (e) => {
  console.error(`fake neon: cannot load the spec: ${e.message}`);
  process.exit(1);
});
