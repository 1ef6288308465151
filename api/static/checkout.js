//! Checkout page: pays at most once per page view, follows the payment live, handles 3-D Secure.
//
// - One Idempotency-Key per page view (a new one only after "Try another card"): a double
//   click, a retried request or a resubmission all name the same payment, which the api
//   replays instead of charging again.
// - Status arrives over Server-Sent Events; if the stream fails, the page polls with backoff.
// - The URL carries the transaction id once a payment exists (`&txn=`), so a reload resumes
//   watching that payment instead of offering the form again.
// - In a checkout session (`cfg.session`) the page pays the session, follows the payment the
//   session already has (another tab's), and after success sends the customer to the
//   merchant's success_url with `session_id` and `transaction_id` added.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const cfg = JSON.parse($('checkout-config').textContent);
  const form = $('pay-form');
  const payButton = $('pay-button');
  const VIEWS = ['pay-view', 'status-view', 'done-view', 'failed-view'];
  const FINAL = ['complete', 'failed'];
  const ZERO_DECIMAL = ['bif', 'clp', 'djf', 'gnf', 'jpy', 'kmf', 'krw', 'mga', 'pyg', 'rwf',
    'ugx', 'vnd', 'vuv', 'xaf', 'xof', 'xpf'];
  const RETRY_FIRST_MS = 500;
  const RETRY_MAX_MS = 5000;
  const POST_GIVE_UP_MS = 60000;

  let idempotencyKey = newKey();
  // The body sent with the current key: pressing Pay again after a lost connection resends
  // exactly it, so the api recognises the payment instead of answering 409.
  let sentBody = null;
  let busy = false;
  let current = null; // the transaction this page follows
  let source = null; // its EventSource
  let pollTimer = null;
  const actionStarted = new Set(); // 3-D Secure opened for these transactions
  const confirmed = new Set(); // and finished (confirm sent) for these

  // ---- helpers ----------------------------------------------------------------------------

  function newKey() {
    if (window.crypto && typeof crypto.randomUUID === 'function') return crypto.randomUUID();
    // randomUUID needs a secure context; plain-http development on a LAN address has none.
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function formatAmount(amount, currency) {
    const digits = ZERO_DECIMAL.includes(currency.toLowerCase()) ? 0 : 2;
    const major = amount / 10 ** digits;
    try {
      return new Intl.NumberFormat('en-US', {
        style: 'currency', currency: currency.toUpperCase(),
        minimumFractionDigits: digits, maximumFractionDigits: digits,
      }).format(major);
    } catch (_) {
      return `${major.toFixed(digits)} ${currency.toUpperCase()}`;
    }
  }

  function show(view) {
    for (const v of VIEWS) $(v).hidden = v !== view;
  }

  function setUrlTxn(id) {
    const url = new URL(window.location.href);
    if (id) url.searchParams.set('txn', id); else url.searchParams.delete('txn');
    url.searchParams.delete('verified');
    history.replaceState(null, '', url);
  }

  function setBusy(on) {
    busy = on;
    payButton.disabled = on;
    form.setAttribute('aria-busy', String(on));
    payButton.textContent = on ? 'Processing…' : `Pay ${cfg.amountDisplay}`;
  }

  // ---- errors next to their fields ---------------------------------------------------------

  function clearErrors() {
    for (const el of form.querySelectorAll('.field-error, .form-error')) el.textContent = '';
    for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  }

  function formError(message) {
    $('form-error').textContent = message;
  }

  /// Puts the api's message next to the field it names and moves focus there.
  function fieldError(field, raw) {
    // The api writes messages for developers too ("email is not a valid address").
    const message = raw ? raw.charAt(0).toUpperCase() + raw.slice(1) : 'Please check this field.';
    const slot = $(`${field}-error`);
    if (!slot) return formError(message);
    slot.textContent = message;
    if (field === 'payment_method') {
      const radio = form.querySelector('input[name="payment_method"]:checked')
        || form.querySelector('input[name="payment_method"]');
      if (radio) radio.focus();
      return;
    }
    const input = $(field);
    if (input) {
      input.setAttribute('aria-invalid', 'true');
      input.focus();
    }
  }

  // ---- card entry: Stripe's Payment Element, or the test-card picker ------------------------

  let stripe = null;
  let elements = null;
  if (cfg.publishableKey) {
    if (typeof window.Stripe !== 'function') {
      formError('The card form could not be loaded. Check your connection and reload the page.');
      payButton.disabled = true;
    } else {
      stripe = window.Stripe(cfg.publishableKey);
      elements = stripe.elements({
        mode: 'payment', amount: cfg.amount, currency: cfg.currency,
        paymentMethodCreation: 'manual',
      });
      elements.create('payment').mount('#payment_method');
    }
  }

  /// The PaymentMethod to pay with, or null after showing why there is none.
  async function paymentMethodId(email) {
    if (!stripe) {
      const checked = form.querySelector('input[name="payment_method"]:checked');
      if (!checked) fieldError('payment_method', 'Choose a test card.');
      return checked ? checked.value : null;
    }
    // Validates the Payment Element, which shows its own messages inside the frame.
    const { error: invalid } = await elements.submit();
    if (invalid) return null;
    const { error, paymentMethod } = await stripe.createPaymentMethod({
      elements, params: { billing_details: { email } },
    });
    if (error) {
      fieldError('payment_method', error.message || 'Your card could not be used.');
      return null;
    }
    return paymentMethod.id;
  }

  // ---- paying --------------------------------------------------------------------------------

  function payUrl() {
    if (!cfg.session) return '/transactions';
    return `/checkout/sessions/${encodeURIComponent(cfg.session.id)}/pay`;
  }

  /// The merchant's success_url with the ids added to its query, before any fragment.
  function successUrl(transactionId) {
    const url = cfg.session.successUrl;
    const hash = url.indexOf('#');
    const base = hash < 0 ? url : url.slice(0, hash);
    const fragment = hash < 0 ? '' : url.slice(hash);
    let sep = '&';
    if (!base.includes('?')) sep = '?';
    else if (base.endsWith('?') || base.endsWith('&')) sep = '';
    const ids = `session_id=${encodeURIComponent(cfg.session.id)}`
      + `&transaction_id=${encodeURIComponent(transactionId)}`;
    return `${base}${sep}${ids}${fragment}`;
  }

  /// POSTs the payment, retrying lost connections and 5xx with the same key and body: the api
  /// replays a payment it already recorded, so a retry can never become a second charge.
  async function postPayment(body) {
    const deadline = Date.now() + POST_GIVE_UP_MS;
    let delay = RETRY_FIRST_MS;
    for (;;) {
      try {
        const res = await fetch(payUrl(), {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'idempotency-key': idempotencyKey },
          body: JSON.stringify(body),
        });
        if (res.status < 500) return res;
      } catch (_) {
        // Network failure: whether the api got the request is unknown; the key makes it safe.
      }
      if (Date.now() + delay > deadline) return null;
      formError('We are having trouble reaching the server. Retrying…');
      await wait(delay);
      delay = Math.min(delay * 2, RETRY_MAX_MS);
    }
  }

  async function pay(event) {
    event.preventDefault();
    if (busy) return;
    clearErrors();
    const email = $('email').value.trim();
    if (!email) return fieldError('email', 'Enter your email address.');
    setBusy(true);
    try {
      let body = sentBody;
      if (!body) {
        const paymentMethod = await paymentMethodId(email);
        if (!paymentMethod) return setBusy(false);
        body = cfg.session
          ? { email, payment_method: paymentMethod }
          : { price: cfg.price, email, payment_method: paymentMethod };
      }
      sentBody = body;
      const res = await postPayment(body);
      if (!res) {
        formError('We could not reach the server. Press Pay to try again: you will not be charged twice.');
        return setBusy(false);
      }
      const data = await res.json().catch(() => ({}));
      if (res.ok) {
        $('form-error').textContent = '';
        return follow(data);
      }
      // A rejected request stored nothing under the key: the next attempt may change the body.
      sentBody = null;
      const err = data.error || {};
      // Another tab's payment is in flight or done: follow it instead of paying again.
      if (err.code === 'session_has_payment' && err.transaction_id) {
        return follow({ id: err.transaction_id });
      }
      // Expired while the page was open: the reload shows the expired page.
      if (err.code === 'session_expired') return window.location.reload();
      if (err.field) fieldError(err.field, err.message);
      else formError(err.message || 'Something went wrong. Please try again.');
      setBusy(false);
    } catch (e) {
      sentBody = null;
      formError('Something went wrong. Please try again.');
      setBusy(false);
    }
  }

  // ---- following a payment -------------------------------------------------------------------

  function follow(t) {
    current = t.id;
    setUrlTxn(t.id);
    render(t);
    if (!FINAL.includes(t.state)) watch(t.id);
  }

  function stopWatching() {
    if (source) source.close();
    source = null;
    clearTimeout(pollTimer);
  }

  /// Live updates over SSE; on any stream error, polling takes over.
  function watch(id) {
    stopWatching();
    if (!('EventSource' in window)) return poll(id, RETRY_FIRST_MS);
    const es = new EventSource(`/transactions/${encodeURIComponent(id)}/events`);
    source = es;
    es.addEventListener('state', (ev) => {
      let t;
      try { t = JSON.parse(ev.data); } catch (_) { return; }
      // Closed before the server ends the stream, or EventSource would reconnect.
      if (FINAL.includes(t.state)) stopWatching();
      render(t);
    });
    es.onerror = () => {
      if (source !== es) return;
      stopWatching();
      poll(id, RETRY_FIRST_MS);
    };
  }

  function poll(id, delay) {
    clearTimeout(pollTimer);
    pollTimer = setTimeout(async () => {
      if (current !== id) return;
      try {
        const res = await fetch(`/transactions/${encodeURIComponent(id)}`, { cache: 'no-store' });
        if (res.status === 404) return missing();
        if (res.ok) {
          const t = await res.json();
          render(t);
          if (FINAL.includes(t.state)) return;
        }
      } catch (_) {
        // Offline for a moment: keep trying, more slowly.
      }
      poll(id, Math.min(delay * 2, RETRY_MAX_MS));
    }, delay);
  }

  function status(text, title) {
    show('status-view');
    $('status-title').textContent = title || 'Processing your payment';
    // Re-setting the same text would make screen readers announce it again.
    if ($('status-text').textContent !== text) $('status-text').textContent = text;
  }

  function render(t) {
    if (!t || t.id !== current) return;
    if (!$('email').value && t.email) $('email').value = t.email;
    $('action-link').hidden = true;
    switch (t.state) {
      case 'pending': return status('Payment received. Waiting for the card processor…');
      case 'processing': return status('Contacting your bank…');
      case 'requires_action': return authenticate(t);
      case 'complete': return complete(t);
      case 'failed': return failed(t);
      default: return status('Checking your payment…');
    }
  }

  function complete(t) {
    stopWatching();
    busy = false;
    if (cfg.session) {
      $('done-title').textContent = 'Thank you! Taking you back to the shop…';
      window.location.assign(successUrl(t.id));
    }
    $('done-amount').textContent = formatAmount(t.amount, t.currency);
    $('done-reference').textContent = t.id;
    $('done-email').textContent = t.email;
    show('done-view');
    $('done-title').focus();
  }

  function failed(t) {
    stopWatching();
    $('failed-message').textContent = (t.error && t.error.message)
      || 'Your payment could not be completed.';
    show('failed-view');
    $('failed-title').focus();
  }

  function missing() {
    stopWatching();
    current = null;
    setUrlTxn(null);
    setBusy(false);
    show('pay-view');
    formError('We could not find that payment. You can start a new one here.');
  }

  // ---- 3-D Secure ----------------------------------------------------------------------------

  /// Tells the api the challenge is over, so the worker reads the PaymentIntent now.
  async function confirm(id) {
    confirmed.add(id);
    let delay = RETRY_FIRST_MS;
    for (let attempt = 0; attempt < 8; attempt += 1) {
      try {
        const res = await fetch(`/transactions/${encodeURIComponent(id)}/confirm`, { method: 'POST' });
        if (res.status === 404) return missing();
        if (res.ok) return render(await res.json());
      } catch (_) {
        // Retry below; the worker also re-reads waiting payments on its own schedule.
      }
      await wait(delay);
      delay = Math.min(delay * 2, RETRY_MAX_MS);
    }
  }

  function challengeUrl(t) {
    const back = cfg.session
      ? new URL(`/checkout/sessions/${encodeURIComponent(cfg.session.id)}`, window.location.origin)
      : new URL('/checkout', window.location.origin);
    if (!cfg.session) back.searchParams.set('price', cfg.price);
    back.searchParams.set('txn', t.id);
    back.searchParams.set('verified', '1');
    const url = new URL(`${cfg.simBase}/sim/3ds/${encodeURIComponent(t.stripe_id)}`);
    url.searchParams.set('return_url', back.href);
    return url.href;
  }

  function authenticate(t) {
    const simUrl = !stripe && cfg.simBase && t.stripe_id ? challengeUrl(t) : null;
    // The way (back) to the challenge, should a navigation not happen or be undone.
    const offerLink = (text) => {
      if (!simUrl) return;
      $('action-link').href = simUrl;
      $('action-link').textContent = text;
      $('action-link').hidden = false;
    };
    if (confirmed.has(t.id)) {
      status('Checking the verification with your bank…', 'Verifying your payment');
      return offerLink('Open the verification page again');
    }
    status('Your bank asks you to confirm this payment.', 'Verify your payment');
    if (actionStarted.has(t.id)) return offerLink('Continue to verification');
    actionStarted.add(t.id);
    if (stripe) {
      // Stripe.js shows the bank's challenge; whatever its outcome, the worker reads the
      // PaymentIntent after confirm and records what Stripe decided.
      stripe.handleNextAction({ clientSecret: t.client_secret })
        .then(() => confirm(t.id), () => confirm(t.id));
      return;
    }
    if (!simUrl) return;
    // stripe-sim's challenge page sends the customer back here (`verified=1`) when done.
    offerLink('Continue to verification');
    stopWatching();
    window.location.assign(simUrl);
  }

  // ---- wiring --------------------------------------------------------------------------------

  form.addEventListener('submit', pay);

  $('retry-button').addEventListener('click', () => {
    // A new payment: a new key, so the declined one is not replayed.
    stopWatching();
    current = null;
    idempotencyKey = newKey();
    sentBody = null;
    setUrlTxn(null);
    clearErrors();
    setBusy(false);
    if (elements) {
      const element = elements.getElement('payment');
      if (element) element.clear();
    }
    show('pay-view');
    const radio = form.querySelector('input[name="payment_method"]:checked');
    if (radio) radio.focus(); else $('email').focus();
  });

  // Back from the challenge page through the browser's cache: listen again.
  window.addEventListener('pageshow', (ev) => {
    if (ev.persisted && current) watch(current);
  });

  const params = new URLSearchParams(window.location.search);
  // The URL's payment, or the one the session already has (paid in another tab).
  const resumeId = params.get('txn') || cfg.resume || null;
  if (resumeId) {
    current = resumeId;
    setBusy(true);
    status('Checking your payment…');
    if (params.get('verified') === '1') {
      setUrlTxn(resumeId);
      confirm(resumeId).then(() => { if (current === resumeId) watch(resumeId); });
    } else {
      watch(resumeId);
    }
  }
})();
