//! Starts the real stack for the browser tests: target/debug/{stripe-sim,api,worker} on free
//! ports, with a fresh Postgres database and a fresh Redis key prefix, and removes all of it
//! again (processes, database, keys) however the tests ended.

import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

export const ROOT = path.resolve(import.meta.dirname, '..');
const BIN = path.join(ROOT, 'target', 'debug');
const LOGS = path.join(ROOT, 'target', 'e2e-logs');
const READY_WITHIN_MS = 60_000;
/** The merchant's key the stack's api takes (checkout sessions, the list). */
export const MERCHANT_KEY = 'mk_e2e_0123456789abcdef0123';

const children = new Set();
// Whatever happens to this process, no server it started outlives it.
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => process.exit(130));
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** The same Postgres URL with another database name. */
function withDatabase(url, name) {
  const u = new URL(url);
  u.pathname = `/${name}`;
  return u.href;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `check` until it returns true, failing after `ms` with `what`. */
async function until(what, ms, check) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`${what} within ${ms} ms`);
    await sleep(100);
  }
}

function start(name, env) {
  const bin = path.join(BIN, name);
  if (!fs.existsSync(bin)) throw new Error(`${bin} is missing: run \`cargo build --bins\` first`);
  fs.mkdirSync(LOGS, { recursive: true });
  const log = fs.openSync(path.join(LOGS, `${name}.log`), 'w');
  const child = spawn(bin, [], { env, stdio: ['ignore', log, log] });
  fs.closeSync(log);
  children.add(child);
  child.exited = new Promise((resolve) => child.once('exit', resolve));
  child.exited.then(() => children.delete(child));
  return child;
}

async function stop(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const gone = await Promise.race([child.exited.then(() => true), sleep(10_000).then(() => false)]);
  if (!gone) {
    child.kill('SIGKILL');
    await child.exited;
  }
}

/** Runs psql against `url` with `sql` on stdin; `vars` become psql variables (:'name'). */
export function psql(url, sql, vars = {}) {
  const args = [url, '-X', '-At', '-v', 'ON_ERROR_STOP=1'];
  for (const [k, v] of Object.entries(vars)) args.push('-v', `${k}=${v}`);
  return execFileSync('psql', args, { input: sql, encoding: 'utf8' }).trim();
}

function redisCli(url, ...args) {
  return execFileSync('redis-cli', ['-u', url, ...args], { encoding: 'utf8' });
}

/** Headless Chromium as every browser test runs it (`CHROMIUM`, default Debian's). */
export async function launchBrowser() {
  const { chromium } = await import('playwright-core');
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    // Playwright gives each launch a fresh, temporary user-data-dir of its own.
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

export async function startStack() {
  const baseDb = process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/postgres';
  const redisUrl = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
  const suffix = randomBytes(6).toString('hex');
  const dbName = `e2e_${suffix}`;
  const stack = {
    dbName,
    databaseUrl: withDatabase(baseDb, dbName),
    adminUrl: withDatabase(baseDb, 'postgres'),
    redisUrl,
    namespace: `e2e_${suffix}`,
    processes: [],
  };
  stack.stop = () => stopStack(stack);
  try {
    const [simPort, apiPort] = [await freePort(), await freePort()];
    stack.sim = `http://127.0.0.1:${simPort}`;
    stack.api = `http://127.0.0.1:${apiPort}`;
    const env = {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      RUST_LOG: process.env.RUST_LOG || 'info',
      DATABASE_URL: stack.databaseUrl,
      REDIS_URL: redisUrl,
      QUEUE_NAMESPACE: stack.namespace,
      PRICES: 'basic=1000:usd,pro=2500:eur',
      STRIPE_SECRET_KEY: 'sk_test_e2e',
      STRIPE_API_BASE: stack.sim,
      STRIPE_SIM_ADDR: `127.0.0.1:${simPort}`,
      API_ADDR: `127.0.0.1:${apiPort}`,
      WORKER_POLL_INTERVAL_MS: '50',
      MERCHANT_API_KEY: MERCHANT_KEY,
    };
    stack.processes.push(start('stripe-sim', env));
    await until('stripe-sim did not answer', READY_WITHIN_MS, async () => {
      return (await fetch(`${stack.sim}/sim/stats`)).ok;
    });
    // The api creates the database and migrates it before it listens.
    stack.processes.push(start('api', env));
    await until('the api was not ready (GET /readyz)', READY_WITHIN_MS, async () => {
      return (await fetch(`${stack.api}/readyz`)).ok;
    });
    // Only now: the worker refuses a schema that is behind.
    stack.processes.push(start('worker', env));
    return stack;
  } catch (e) {
    await stopStack(stack);
    throw e;
  }
}

async function stopStack(stack) {
  // Reverse order: the worker stops taking jobs before the api and the simulator go away.
  for (const child of [...stack.processes].reverse()) await stop(child);
  stack.processes = [];
  try {
    psql(stack.adminUrl, `DROP DATABASE IF EXISTS ${stack.dbName} WITH (FORCE);`);
  } catch (e) {
    console.error(`could not drop database ${stack.dbName}: ${e.message}`);
  }
  try {
    const keys = redisCli(stack.redisUrl, '--scan', '--pattern', `${stack.namespace}*`)
      .split('\n').filter(Boolean);
    for (let i = 0; i < keys.length; i += 100) redisCli(stack.redisUrl, 'del', ...keys.slice(i, i + 100));
    // apalis also lists every queue it has seen in one shared set.
    const queues = redisCli(stack.redisUrl, 'zrange', 'core:apalis:queues:list', '0', '-1')
      .split('\n').filter((q) => q.startsWith(stack.namespace));
    if (queues.length) redisCli(stack.redisUrl, 'zrem', 'core:apalis:queues:list', ...queues);
  } catch (e) {
    console.error(`could not clean Redis keys ${stack.namespace}*: ${e.message}`);
  }
}
