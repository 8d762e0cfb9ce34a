// node-vault (an unmodified Vault client for Node.js) against a `zafe server
// --dev` on 127.0.0.1: health, seal status, KV v2 read/write/patch/list/
// delete (with the LIST verb node-vault sends by default, and with
// ?list=1), policies, transit, token lookup and AppRole login.
//
// Run: (cd tests/compat/node && npm ci && npm test). ZAFE_BIN overrides the
// binary (default: target/debug/zafe, built with cargo if missing).

'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn, execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const nodeVault = require('node-vault');

const REPO = path.resolve(__dirname, '..', '..', '..');
const BIN = process.env.ZAFE_BIN || path.join(REPO, 'target', 'debug', 'zafe');
const ROOT_TOKEN = `dev-${crypto.randomBytes(16).toString('hex')}`;

let server;
let endpoint;
let logFile;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function waitReady(url, child) {
  const deadline = Date.now() + 30000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) {
      throw new Error(`zafe exited early (${child.exitCode}):\n${fs.readFileSync(logFile, 'utf8')}`);
    }
    try {
      await fetch(`${url}/v1/sys/seal-status`, { signal: AbortSignal.timeout(2000) });
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error('zafe did not answer within 30s');
}

function client(token, extra = {}) {
  return nodeVault({ apiVersion: 'v1', endpoint, token, requestOptions: { timeout: 20000 }, ...extra });
}

async function status(promise) {
  try {
    await promise;
    return 200;
  } catch (e) {
    return e.response ? e.response.statusCode : e;
  }
}

before(async () => {
  if (!fs.existsSync(BIN)) {
    execFileSync('cargo', ['build', '-p', 'zafe'], { cwd: REPO, stdio: 'inherit', timeout: 1800000 });
  }
  const port = await freePort();
  endpoint = `http://127.0.0.1:${port}`;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zafe-node-'));
  logFile = path.join(dir, 'zafe.log');
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(ZAFE_|VAULT_)/.test(k)));
  const log = fs.openSync(logFile, 'w');
  server = spawn(BIN, ['server', '--dev', '--dev-root-token', ROOT_TOKEN, '--listen', `127.0.0.1:${port}`], {
    env: { ...env, NO_COLOR: '1' },
    stdio: ['ignore', log, log],
  });
  await waitReady(endpoint, server);
});

after(async () => {
  if (server && server.exitCode === null) {
    const exited = new Promise((r) => server.once('exit', r));
    server.kill('SIGTERM');
    const timer = setTimeout(() => server.kill('SIGKILL'), 20000);
    await exited;
    clearTimeout(timer);
  }
});

test('health, seal status and init status', async () => {
  const vault = client(ROOT_TOKEN);
  const health = await vault.health();
  assert.equal(health.initialized, true);
  assert.equal(health.sealed, false);
  assert.equal(health.standby, false);
  assert.equal(typeof health.version, 'string');
  assert.equal(typeof health.server_time_utc, 'number');
  const seal = await vault.status();
  assert.equal(seal.sealed, false);
  assert.equal(seal.type, 'shamir');
  const init = await vault.initialized();
  assert.equal(init.initialized, true);
  const mounts = await vault.mounts();
  assert.equal(mounts.data['secret/'].type, 'kv');
});

test('KV v2 write, read, patch, list, delete', async () => {
  const vault = client(ROOT_TOKEN);
  const written = await vault.write('secret/data/node/app', { data: { user: 'app', password: 'one' } });
  assert.equal(written.data.version, 1);
  const read = await vault.read('secret/data/node/app');
  assert.deepEqual(read.data.data, { user: 'app', password: 'one' });
  assert.equal(read.data.metadata.version, 1);

  // node-vault's update() is a JSON merge patch (PATCH).
  const patched = await vault.update('secret/data/node/app', { data: { password: 'two' } });
  assert.equal(patched.data.version, 2);
  assert.deepEqual((await vault.read('secret/data/node/app')).data.data, { user: 'app', password: 'two' });
  assert.deepEqual((await vault.read('secret/data/node/app?version=1')).data.data, { user: 'app', password: 'one' });

  // Check-and-set.
  assert.equal(await status(vault.write('secret/data/node/app', { options: { cas: 1 }, data: { x: '1' } })), 400);

  await vault.write('secret/data/node/other', { data: { k: 'v' } });
  const listed = await vault.list('secret/metadata/node'); // the LIST verb
  assert.deepEqual([...listed.data.keys].sort(), ['app', 'other']);
  const listedGet = await client(ROOT_TOKEN, { noCustomHTTPVerbs: true }).list('secret/metadata/node'); // GET ?list=1
  assert.deepEqual([...listedGet.data.keys].sort(), ['app', 'other']);

  const meta = await vault.read('secret/metadata/node/app');
  assert.equal(meta.data.current_version, 2);

  await vault.delete('secret/data/node/app'); // soft delete of the latest version
  assert.equal(await status(vault.read('secret/data/node/app')), 404);
  await vault.delete('secret/metadata/node/app'); // everything
  assert.equal(await status(vault.read('secret/metadata/node/app')), 404);
  assert.equal(await status(client('not-a-token').read('secret/data/node/other')), 403);
});

test('policies and a token limited by one', async () => {
  const vault = client(ROOT_TOKEN);
  const rules = 'path "secret/data/node/*" { capabilities = ["read"] }';
  await vault.addPolicy({ name: 'node-reader', rules });
  assert.equal((await vault.getPolicy({ name: 'node-reader' })).rules, rules);
  assert.ok((await vault.policies()).policies.includes('node-reader'));

  await vault.write('secret/data/node/shared', { data: { v: '1' } });
  // node-vault's tokenCreate adopts the new token, so use a throwaway client.
  const created = await client(ROOT_TOKEN).tokenCreate({ policies: ['node-reader'], ttl: '10m' });
  const limited = client(created.auth.client_token);
  const self = await limited.tokenLookupSelf();
  assert.deepEqual([...self.data.policies].sort(), ['default', 'node-reader']);
  assert.deepEqual((await limited.read('secret/data/node/shared')).data.data, { v: '1' });
  assert.equal(await status(limited.write('secret/data/node/shared', { data: { v: '2' } })), 403);

  await vault.removePolicy({ name: 'node-reader' });
  assert.equal(await status(vault.getPolicy({ name: 'node-reader' })), 404);
});

test('transit encrypt and decrypt', async () => {
  const vault = client(ROOT_TOKEN);
  await vault.mount({ mount_point: 'transit', type: 'transit' });
  await vault.write('transit/keys/node-key', {});
  const plaintext = Buffer.from('node payload').toString('base64');
  const enc = await vault.encryptData({ name: 'node-key', plaintext });
  assert.match(enc.data.ciphertext, /^vault:v1:/);
  const dec = await vault.decryptData({ name: 'node-key', ciphertext: enc.data.ciphertext });
  assert.equal(dec.data.plaintext, plaintext);
});

test('AppRole login', async () => {
  const vault = client(ROOT_TOKEN);
  await vault.enableAuth({ mount_point: 'approle', type: 'approle' });
  await vault.addApproleRole({ role_name: 'node-app', policies: 'default', token_ttl: 900 });
  const roleId = (await vault.getApproleRoleId({ role_name: 'node-app' })).data.role_id;
  const secretId = (await vault.getApproleRoleSecret({ role_name: 'node-app' })).data.secret_id;
  const app = client(undefined);
  const login = await app.approleLogin({ role_id: roleId, secret_id: secretId });
  assert.ok(login.auth.client_token);
  assert.equal(login.auth.lease_duration, 900);
  assert.equal(app.token, login.auth.client_token); // node-vault adopts the new token
  assert.ok((await app.tokenLookupSelf()).data.policies.includes('default'));
});
