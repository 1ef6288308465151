//! The checkout in a real browser (headless Chromium) against the real api, worker and
//! stripe-sim: paying, declines, double clicks, lost responses, 3-D Secure, the SSE fallback.
//! Every wait is a condition with a deadline; a screenshot of each final screen is saved
//! under target/screenshots/.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { ROOT, launchBrowser, psql, startStack } from './stack.mjs';

const SHOTS = path.join(ROOT, 'target', 'screenshots');
const PHONE = { width: 390, height: 844 };
const DESKTOP = { width: 1280, height: 800 };
const STEP_MS = 20_000; // the longest any one condition may take
const TEST_MS = 90_000;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let stack;
let browser;

before(async () => {
  fs.mkdirSync(SHOTS, { recursive: true });
  stack = await startStack();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await stack?.stop();
});

/** A page in a fresh browser context, on the checkout of `price`. */
async function checkout(t, viewport, price = 'basic') {
  const context = await browser.newContext({ viewport });
  t.after(() => context.close());
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  // Failed requests are logged too, and some tests fail requests on purpose: only CSP
  // violations and uncaught exceptions count.
  page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) errors.push(m.text()); });
  t.after(() => assert.deepEqual(errors, [], 'script errors or CSP violations on the page'));
  await page.goto(`${stack.api}/checkout?price=${price}`);
  await page.waitForSelector('#pay-view:not([hidden])');
  return page;
}

async function fillIn(page, email, pm) {
  await page.fill('#email', email);
  await page.check(`input[name="payment_method"][value="${pm}"]`);
}

function uniqueEmail(tag) {
  return `${tag}-${Date.now()}-${Math.floor(Math.random() * 1e6)}@example.com`;
}

function rowsFor(email) {
  return psql(stack.databaseUrl, "SELECT id, state FROM transactions WHERE email = :'email';", { email })
    .split('\n').filter(Boolean).map((line) => {
      const [id, state] = line.split('|');
      return { id, state };
    });
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

test('the checkout renders the product and amount on a phone and a desktop', { timeout: TEST_MS }, async (t) => {
  for (const [name, viewport] of [['phone', PHONE], ['desktop', DESKTOP]]) {
    const page = await checkout(t, viewport);
    assert.equal(await page.textContent('#product-name'), 'Basic');
    assert.equal(await page.textContent('#price-amount'), '$10.00');
    assert.equal((await page.textContent('#pay-button')).trim(), 'Pay $10.00');
    assert.equal(await page.locator('fieldset legend').textContent(), 'Test card');
    assert.equal(await page.locator('input[name="payment_method"]').count(), 7);
    await shot(page, `checkout-${name}`);
  }
});

test('the api\'s validation error is shown next to its field', { timeout: TEST_MS }, async (t) => {
  const page = await checkout(t, PHONE);
  await fillIn(page, 'not-an-email', 'pm_card_visa');
  await page.click('#pay-button');
  await page.waitForSelector('#email-error:has-text("not a valid address")');
  assert.equal(await page.getAttribute('#email', 'aria-invalid'), 'true');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'email');
  assert.equal(await page.isEnabled('#pay-button'), true, 'the customer can correct and pay');
  await shot(page, 'validation-error-phone');
});

test('pays with the success card and lands on the thank-you view', { timeout: TEST_MS }, async (t) => {
  const page = await checkout(t, DESKTOP);
  const email = uniqueEmail('success');
  await fillIn(page, email, 'pm_card_visa');
  await page.click('#pay-button');
  await page.waitForSelector('#done-view:not([hidden])');
  const reference = await page.textContent('#done-reference');
  assert.match(reference, UUID);
  assert.equal(await page.textContent('#done-amount'), '$10.00');
  assert.deepEqual(rowsFor(email), [{ id: reference, state: 'complete' }]);
  await shot(page, 'success-desktop');

  // A reload resumes the payment (the URL names it) instead of offering the form again.
  assert.equal(new URL(page.url()).searchParams.get('txn'), reference);
  await page.reload();
  await page.waitForSelector('#done-view:not([hidden])');
  assert.equal(rowsFor(email).length, 1);
});

test('a declined card shows the bank\'s message, and another card pays with a new key', { timeout: TEST_MS }, async (t) => {
  const page = await checkout(t, PHONE);
  const email = uniqueEmail('declined');
  const keys = [];
  page.on('request', (r) => {
    if (r.method() === 'POST' && r.url().endsWith('/transactions')) keys.push(r.headers()['idempotency-key']);
  });
  await fillIn(page, email, 'pm_card_visa_chargeDeclinedInsufficientFunds');
  await page.click('#pay-button');
  await page.waitForSelector('#failed-view:not([hidden])');
  const [declined] = rowsFor(email);
  assert.equal(declined.state, 'failed');
  const message = psql(stack.databaseUrl, "SELECT error_message FROM transactions WHERE id = :'id';", { id: declined.id });
  assert.ok(message.length > 0);
  assert.equal(await page.textContent('#failed-message'), message);
  await shot(page, 'declined-phone');

  await page.click('#retry-button');
  await page.waitForSelector('#pay-view:not([hidden])');
  await page.check('input[value="pm_card_visa"]');
  await page.click('#pay-button');
  await page.waitForSelector('#done-view:not([hidden])');
  assert.equal(keys.length, 2);
  assert.notEqual(keys[0], keys[1], 'a new payment needs a new Idempotency-Key');
  assert.deepEqual(rowsFor(email).map((r) => r.state).sort(), ['complete', 'failed']);
});

test('a double click on Pay makes exactly one transaction', { timeout: TEST_MS }, async (t) => {
  const page = await checkout(t, DESKTOP);
  const email = uniqueEmail('double');
  await fillIn(page, email, 'pm_card_visa');
  await page.dblclick('#pay-button');
  // And a resubmission of the form while the payment is under way.
  await page.evaluate(() => document.getElementById('pay-form').requestSubmit());
  await page.waitForSelector('#done-view:not([hidden])');
  const rows = rowsFor(email);
  assert.equal(rows.length, 1, `one transaction, not ${JSON.stringify(rows)}`);
  assert.equal(rows[0].state, 'complete');
  await shot(page, 'double-click-desktop');
});

test('a lost response is retried with the same key and makes one transaction', { timeout: TEST_MS }, async (t) => {
  const page = await checkout(t, DESKTOP);
  const email = uniqueEmail('lost');
  const keys = [];
  let cut = false;
  await page.route('**/transactions', async (route) => {
    keys.push(route.request().headers()['idempotency-key']);
    if (cut) return route.continue();
    cut = true;
    // The api records the payment, but the browser never hears back.
    const answer = await route.fetch();
    assert.equal(answer.status(), 202);
    await route.abort('connectionreset');
  });
  const replayed = page.waitForResponse((r) => r.url().endsWith('/transactions') && r.status() === 202);
  await fillIn(page, email, 'pm_card_visa');
  await page.click('#pay-button');
  assert.equal((await replayed).headers()['idempotent-replayed'], 'true');
  await page.waitForSelector('#done-view:not([hidden])');
  assert.equal(keys.length, 2);
  assert.equal(keys[0], keys[1], 'the retry must carry the same Idempotency-Key');
  assert.equal(rowsFor(email).length, 1);
});

test('when the event stream fails, the page polls and still finishes', { timeout: TEST_MS }, async (t) => {
  const page = await checkout(t, PHONE);
  await page.route('**/events', (route) => route.abort('connectionrefused'));
  const polled = page.waitForRequest((r) => r.method() === 'GET' && /\/transactions\/[0-9a-f-]{36}$/.test(r.url()));
  await fillIn(page, uniqueEmail('poll'), 'pm_card_visa');
  await page.click('#pay-button');
  await polled;
  await page.waitForSelector('#done-view:not([hidden])');
});

test('completes a 3-D Secure challenge on the simulator\'s page', { timeout: TEST_MS }, async (t) => {
  const page = await checkout(t, DESKTOP);
  const email = uniqueEmail('3ds');
  await fillIn(page, email, 'pm_card_threeDSecure2Required');
  await page.click('#pay-button');
  await page.waitForURL((url) => url.href.startsWith(`${stack.sim}/sim/3ds/`));
  await page.waitForSelector('#sim-3ds-approve');
  await shot(page, 'three-d-secure-challenge');
  await page.click('#sim-3ds-approve');
  // Back on the checkout, which confirms and follows the payment to the end.
  await page.waitForURL((url) => url.href.startsWith(`${stack.api}/checkout`));
  await page.waitForSelector('#done-view:not([hidden])');
  const [row] = rowsFor(email);
  assert.equal(row.state, 'complete');
  assert.equal(await page.textContent('#done-reference'), row.id);
  assert.equal(new URL(page.url()).searchParams.get('verified'), null);
  await shot(page, 'three-d-secure-complete');
});

test('a failed 3-D Secure challenge ends in the decline view', { timeout: TEST_MS }, async (t) => {
  const page = await checkout(t, PHONE);
  const email = uniqueEmail('3ds-fail');
  await fillIn(page, email, 'pm_card_authenticationRequired');
  await page.click('#pay-button');
  await page.waitForSelector('#sim-3ds-fail');
  await page.click('#sim-3ds-fail');
  await page.waitForSelector('#failed-view:not([hidden])');
  assert.equal(rowsFor(email)[0].state, 'failed');
  assert.ok((await page.textContent('#failed-message')).length > 0);
  await shot(page, 'three-d-secure-failed-phone');
});
