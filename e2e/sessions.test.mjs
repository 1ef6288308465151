//! Checkout sessions in a real browser against the real api, worker and stripe-sim: the
//! merchant makes a session, the customer pays at its URL and lands on the merchant's
//! success_url with the ids; a decline then another card; a second tab cannot pay twice; an
//! expired session's page. The "shop" is a small HTTP server of the test's own.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { MERCHANT_KEY, ROOT, launchBrowser, psql, startStack } from './stack.mjs';

const SHOTS = path.join(ROOT, 'target', 'screenshots');
const STEP_MS = 20_000;
const TEST_MS = 90_000;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let stack;
let browser;
let shop;
let shopUrl;

before(async () => {
  fs.mkdirSync(SHOTS, { recursive: true });
  shop = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(`<!doctype html><title>Shop</title><h1 id="shop">${req.url.startsWith('/thanks') ? 'Thanks' : 'Cart'}</h1>`);
  });
  await new Promise((resolve) => shop.listen(0, '127.0.0.1', resolve));
  shopUrl = `http://127.0.0.1:${shop.address().port}`;
  stack = await startStack();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await stack?.stop();
  shop?.close();
});

/** A new session from the merchant's backend. */
async function newSession(extra = {}) {
  const res = await fetch(`${stack.api}/checkout/sessions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${MERCHANT_KEY}` },
    body: JSON.stringify({
      amount: 4200, currency: 'usd', reference: `order-${Date.now()}`,
      success_url: `${shopUrl}/thanks?order=7`, cancel_url: `${shopUrl}/cart`, ...extra,
    }),
  });
  const body = await res.json();
  assert.equal(res.status, 201, JSON.stringify(body));
  return body;
}

async function open(t, context, url) {
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) errors.push(m.text()); });
  t.after(() => assert.deepEqual(errors, [], 'script errors or CSP violations on the page'));
  await page.goto(url);
  return page;
}

async function context(t) {
  const c = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  t.after(() => c.close());
  return c;
}

async function payWith(page, pm, email = 'buyer@example.com') {
  await page.waitForSelector('#pay-view:not([hidden])');
  await page.fill('#email', email);
  await page.check(`input[name="payment_method"][value="${pm}"]`);
  await page.click('#pay-button');
}

/** The shop page the customer landed on, with the ids it was given. */
async function landed(page) {
  await page.waitForURL((url) => url.href.startsWith(`${shopUrl}/thanks`));
  await page.waitForSelector('#shop');
  const url = new URL(page.url());
  return {
    order: url.searchParams.get('order'),
    sessionId: url.searchParams.get('session_id'),
    transactionId: url.searchParams.get('transaction_id'),
  };
}

function attempts(sessionId) {
  return psql(stack.databaseUrl,
    "SELECT id, state FROM transactions WHERE session_id = :'sid' ORDER BY created_at;",
    { sid: sessionId })
    .split('\n').filter(Boolean).map((line) => {
      const [id, state] = line.split('|');
      return { id, state };
    });
}

test('paying in a session returns the customer to success_url with the ids', { timeout: TEST_MS }, async (t) => {
  const session = await newSession();
  const page = await open(t, await context(t), session.url);
  assert.equal(await page.textContent('#pay-button'), 'Pay $42.00');
  assert.equal(await page.getAttribute('#cancel-link', 'href'), `${shopUrl}/cart`);
  await page.screenshot({ path: path.join(SHOTS, 'session-form.png'), fullPage: true });
  await payWith(page, 'pm_card_visa');
  const back = await landed(page);
  assert.equal(back.order, '7', 'the merchant\'s own query is kept');
  assert.equal(back.sessionId, session.id);
  assert.match(back.transactionId, UUID);
  assert.deepEqual(attempts(session.id), [{ id: back.transactionId, state: 'complete' }]);
});

test('a decline, then another card in the same session', { timeout: TEST_MS }, async (t) => {
  const session = await newSession();
  const page = await open(t, await context(t), session.url);
  await payWith(page, 'pm_card_visa_chargeDeclined');
  await page.waitForSelector('#failed-view:not([hidden])');
  await page.click('#retry-button');
  await payWith(page, 'pm_card_visa');
  const back = await landed(page);
  const rows = attempts(session.id);
  assert.deepEqual(rows.map((r) => r.state), ['failed', 'complete']);
  assert.equal(back.transactionId, rows[1].id);
});

test('a second tab cannot pay twice: it follows the first tab\'s payment', { timeout: TEST_MS }, async (t) => {
  const session = await newSession();
  const ctx = await context(t);
  const first = await open(t, ctx, session.url);
  const second = await open(t, ctx, session.url);
  await payWith(first, 'pm_card_visa');
  const paid = await landed(first);
  // The second tab still shows the form; paying there starts nothing new.
  await payWith(second, 'pm_card_visa', 'other@example.com');
  const followed = await landed(second);
  assert.equal(followed.transactionId, paid.transactionId);
  // A tab opened afterwards goes straight back to the shop with the same payment.
  const third = await open(t, ctx, session.url);
  assert.equal((await landed(third)).transactionId, paid.transactionId);
  assert.deepEqual(attempts(session.id), [{ id: paid.transactionId, state: 'complete' }]);
});

test('an expired session shows a clear page and no form', { timeout: TEST_MS }, async (t) => {
  const session = await newSession({ expires_in: 1800 });
  psql(stack.databaseUrl,
    "UPDATE checkout_sessions SET expires_at = now() - interval '1 second' WHERE id = :'sid';",
    { sid: session.id });
  const page = await (await context(t)).newPage();
  const res = await page.goto(session.url);
  assert.equal(res.status(), 410);
  assert.equal(await page.textContent('h1'), 'This checkout has expired');
  assert.equal(await page.getAttribute('a.button', 'href'), `${shopUrl}/cart`);
  assert.equal(await page.$('#pay-form'), null);
  await page.screenshot({ path: path.join(SHOTS, 'session-expired.png'), fullPage: true });
  assert.deepEqual(attempts(session.id), []);
});
