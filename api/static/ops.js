// The ops page: polls /ops/api/summary (same origin; the browser resends the Basic
// credentials it was asked for) and renders it. No framework, no inline script (CSP 'self').
"use strict";

const $ = (id) => document.getElementById(id);

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text == null ? "—" : String(text);
  if (cls) td.className = cls;
  return td;
}

function rows(tbody, items, render, empty) {
  tbody.replaceChildren();
  if (!items.length) {
    const tr = document.createElement("tr");
    const td = cell(empty, "empty");
    td.colSpan = tbody.closest("table").querySelectorAll("th").length;
    tr.append(td);
    tbody.append(tr);
    return;
  }
  for (const item of items) {
    const tr = document.createElement("tr");
    tr.append(...render(item));
    tbody.append(tr);
  }
}

function tiles(dl, pairs, warn) {
  dl.replaceChildren();
  for (const [name, value] of pairs) {
    const div = document.createElement("div");
    if (warn.includes(name) && value > 0) div.className = "warn";
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = value == null ? "—" : value;
    div.append(dt, dd);
    dl.append(div);
  }
}

function chart(points) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 600 145");
  svg.setAttribute("preserveAspectRatio", "none");
  const minutes = [];
  const now = Math.floor(Date.now() / 60000);
  for (let i = 14; i >= 0; i--) minutes.push(now - i);
  const by = (m, s) => points.filter((p) => Math.floor(Date.parse(p.minute) / 60000) === m && p.state === s)
    .reduce((a, p) => a + p.count, 0);
  const max = Math.max(1, ...minutes.map((m) => by(m, "complete") + by(m, "failed")));
  const w = 600 / minutes.length;
  minutes.forEach((m, i) => {
    let y = 140;
    for (const [state, cls] of [["complete", "ok"], ["failed", "bad"]]) {
      const h = (by(m, state) / max) * 120;
      const r = document.createElementNS(ns, "rect");
      r.setAttribute("x", i * w + 4); r.setAttribute("width", w - 8);
      r.setAttribute("y", y - h); r.setAttribute("height", h); r.setAttribute("class", cls);
      svg.append(r);
      y -= h;
    }
  });
  // The caption is HTML, not SVG text: the chart stretches to the page width, text must not.
  const caption = document.createElement("p");
  caption.className = "muted";
  caption.textContent = `highest minute: ${max} · blue complete · red failed`;
  $("chart").replaceChildren(svg, caption);
}

async function retry(button, id) {
  button.disabled = true;
  const res = await fetch(`/ops/api/dead/${encodeURIComponent(id)}/retry`, { method: "POST" });
  button.textContent = res.ok ? "Queued" : "Failed";
  refresh();
}

async function refresh() {
  try {
    const res = await fetch("/ops/api/summary", { headers: { accept: "application/json" } });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const s = await res.json();
    const q = s.queue || {};
    const workers = q.workers || [];
    tiles($("queue"), [["scheduled", q.scheduled], ["ready", q.active], ["in flight", q.inflight],
      ["done", q.done], ["dead", q.dead], ["workers", q.workers && workers.length]], ["dead"]);
    tiles($("payments"), Object.entries(s.transactions), ["failed"]);
    chart(s.throughput);
    rows($("workers"), workers, (w) => [cell(w.name),
      cell(w.last_heartbeat ? new Date(w.last_heartbeat).toLocaleTimeString() : "-"),
      cell(w.presumed_dead ? "presumed dead" : `${w.inflight} in flight`)], "no worker registered");
    rows($("dead"), s.dead, (d) => {
      const td = document.createElement("td");
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = "Retry";
      b.setAttribute("aria-label", `Retry job ${d.task_id}`);
      b.addEventListener("click", () => retry(b, d.task_id));
      td.append(b);
      return [cell(d.task_id), cell(d.transaction_id), cell(d.attempts), cell(d.last_error), td];
    }, "no dead job");
    rows($("discrepancies"), s.discrepancies, (d) => [cell(new Date(d.found_at).toLocaleString()),
      cell(d.kind), cell(d.transaction_id), cell(d.stripe_id), cell(d.related_transaction_id), cell(d.detail)],
      "no discrepancy");
    rows($("webhooks"), s.webhooks, (w) => [cell(w.url + (w.enabled ? "" : " (disabled)")),
      cell(w.pending), cell(w.failing, w.failing > 0 ? "warn" : ""), cell(w.failed, w.failed > 0 ? "warn" : ""),
      cell(w.delivered), cell(w.oldest_pending ? new Date(w.oldest_pending).toLocaleString() : "-"),
      cell(w.last_error || "-")], "no endpoint configured");
    $("unknown").textContent = s.outcome_unknown > 0
      ? `${s.outcome_unknown} payment(s) with an unknown outcome are being resolved.`
      : "No payment has an unknown outcome.";
    rows($("failures"), s.failures, (f) => [cell(new Date(f.updated_at).toLocaleString()), cell(f.id),
      cell(`${(f.amount / 100).toFixed(2)} ${f.currency.toUpperCase()}`), cell(f.error_code), cell(f.decline_code)], "no failure");
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    $("updated").textContent = `could not refresh: ${e.message}`;
  }
}

refresh();
setInterval(refresh, 5000);
