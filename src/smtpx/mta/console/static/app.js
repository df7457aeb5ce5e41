// The smtpx console: one page on the control plane's JSON API. No framework, no build.
// Everything shown is set with textContent (never parsed as HTML): mail data is hostile.
"use strict";

const TOKEN_KEY = "smtpx-console-token";
const REFRESH_MS = 5000;
const EVENTS_KEPT = 100;
const LIST_SHOWN = 500; // rows drawn at most: a big queue is for filters, not scrolling
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
let shown = null; // the message open in the message view
let filters = new URLSearchParams();
let refreshTimer = null;
let listAsked = 0;
let started = false; // the timer and the event stream, once

// -- the token: once in the fragment (#token=...), then in this tab's sessionStorage --------
function takeToken() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.has("token")) {
    sessionStorage.setItem(TOKEN_KEY, fragment.get("token"));
    history.replaceState(null, "", location.pathname + location.search);
  }
}

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.set("Authorization", "Bearer " + token);
  const response = await fetch(path, { ...options, headers, credentials: "omit", cache: "no-store" });
  if (response.status === 401) throw new Unauthorized("a valid token is required");
  return response;
}

async function getJson(path) {
  const response = await api(path);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

async function postJson(path, body) {
  const response = await api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error || response.statusText);
  return answer;
}

// -- small DOM helpers ---------------------------------------------------------------------
function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function svg(tag, attributes) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

function age(seconds) {
  seconds = Math.max(0, Math.round(seconds));
  if (seconds < 60) return seconds + "s";
  if (seconds < 3600) return Math.floor(seconds / 60) + "m";
  if (seconds < 86400) return Math.floor(seconds / 3600) + "h" + String(Math.floor(seconds % 3600 / 60)).padStart(2, "0");
  return Math.floor(seconds / 86400) + "d" + Math.floor(seconds % 86400 / 3600) + "h";
}

function stamp(epoch) {
  return new Date(epoch * 1000).toISOString().replace("T", " ").slice(0, 19) + "Z";
}

function clock(epoch) {
  return new Date(epoch * 1000).toISOString().slice(11, 19);
}

// -- the panels ----------------------------------------------------------------------------
async function loadServer() {
  const server = await getJson("/v1/server");
  $("server").textContent = server.hostname + " · smtpx " + server.version;
}

async function loadCounts() {
  const counts = await getJson("/v1/spool/count");
  const box = $("counts");
  box.replaceChildren(el("span", counts.count + " queued"));
  for (const [status, n] of Object.entries(counts.by_status).sort()) {
    box.append(el("span", status + " " + n));
  }
}

async function loadShape() {
  const shape = await getJson("/v1/console/shape?by=" + encodeURIComponent($("shape-by").value));
  const table = $("shape");
  const head = el("tr");
  head.append(el("th", "domain"), el("th", "T", "n"));
  for (const label of shape.buckets) head.append(el("th", label, "n"));
  const peak = Math.max(1, ...shape.rows.slice(1).flatMap((row) => row.by_age));
  const rows = shape.rows.map((row, index) => {
    const tr = el("tr", null, index === 0 ? "total" : "");
    tr.append(el("td", row.domain), el("td", row.total, "n"));
    for (const n of row.by_age) {
      const cell = el("td", n || "", "n");
      // The heat of a cell: its share of the busiest cell (TOTAL row left plain).
      if (n && index > 0) cell.style.background = `rgba(217, 142, 4, ${0.15 + 0.75 * n / peak})`;
      tr.append(cell);
    }
    return tr;
  });
  table.replaceChildren(head, ...rows);
}

async function loadRates() {
  const rates = await getJson("/v1/console/rates");
  drawThroughput(rates.series);
  const table = $("reasons");
  const head = el("tr");
  head.append(el("th", "count", "n"), el("th", "last hour"), el("th", "reason"));
  const rows = rates.reasons.map((reason) => {
    const tr = el("tr");
    const spark = el("td");
    spark.append(sparkline(reason.by_minute));
    tr.append(el("td", reason.total, "n"), spark, el("td", reason.reason));
    return tr;
  });
  if (!rows.length) rows.push(el("tr"));
  if (!rates.reasons.length) rows[0].append(el("td", "no deferrals in the last hour"));
  table.replaceChildren(head, ...rows);
}

function drawThroughput(series) {
  const width = 600, height = 140, bar = width / series.length;
  const peak = Math.max(1, ...series.map((m) => Math.max(m.delivered + m.deferred + m.bounced, m.spooled)));
  const scale = (height - 14) / peak;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img" });
  chart.append(svg("title", {}));
  chart.firstChild.textContent = "messages per minute, the last hour (peak " + peak + ")";
  series.forEach((minute, i) => {
    let y = height;
    for (const kind of ["delivered", "deferred", "bounced"]) {
      if (!minute[kind]) continue;
      const h = minute[kind] * scale;
      y -= h;
      const rect = svg("rect", { x: i * bar + 0.5, y, width: Math.max(bar - 1, 1), height: h, class: kind });
      rect.append(svg("title", {}));
      rect.firstChild.textContent = `${clock(minute.start)} ${kind} ${minute[kind]}`;
      chart.append(rect);
    }
  });
  const points = series.map((m, i) => `${i * bar + bar / 2},${height - m.spooled * scale}`);
  chart.append(svg("polyline", { points: points.join(" "), class: "spooled" }));
  const label = svg("text", { x: 2, y: 11, "font-size": 11, fill: "#5f6b76" });
  label.textContent = "peak " + peak + "/min";
  chart.append(label);
  $("throughput").replaceChildren(chart);
}

function sparkline(values) {
  const width = 120, height = 16, bar = width / values.length;
  const peak = Math.max(1, ...values);
  const line = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}` });
  values.forEach((n, i) => {
    if (n) line.append(svg("rect", { x: i * bar, y: height - n / peak * height, width: Math.max(bar - 0.5, 1), height: n / peak * height, class: "spark" }));
  });
  return line;
}

async function loadList() {
  const asked = ++listAsked; // an older answer arriving late must not replace a newer one
  let listing;
  try {
    const asking = new URLSearchParams(filters);
    asking.set("limit", LIST_SHOWN); // the oldest rows only: a big queue is not sent whole
    listing = await getJson("/v1/spool/messages?" + asking.toString());
    if (asked !== listAsked) return;
    $("filter-error").textContent = "";
  } catch (error) {
    if (error instanceof Unauthorized) throw error;
    if (asked !== listAsked) return;
    $("filter-error").textContent = error.message;
    return;
  }
  const now = Date.now() / 1000;
  const rows = listing.messages.slice(0, LIST_SHOWN).map((m) => {
    const tr = el("tr", null, shown && shown.id === m.id ? "chosen" : "");
    tr.dataset.id = m.id;
    const last = m.attempts.length ? m.attempts[m.attempts.length - 1].error : "";
    const status = el("td");
    status.append(el("span", m.status, "status " + m.queue));
    tr.append(el("td", m.id), el("td", age(now - m.spool_date)), el("td", m.sender || "<>"),
      el("td", m.recipients.join(", ")), status, el("td", m.attempt_count, "n"), el("td", last, "cut"));
    tr.lastChild.title = last;
    tr.addEventListener("click", () => openMessage(m.id).then(() => $("message").scrollIntoView({ block: "nearest" })));
    return tr;
  });
  $("list").tBodies[0].replaceChildren(...rows);
  const count = listing.total;
  $("list-count").textContent = count > LIST_SHOWN
    ? `${count} messages; the first ${LIST_SHOWN} shown (filter to narrow)`
    : count + " message(s)";
}

async function openMessage(id) {
  const m = await getJson("/v1/spool/messages/" + encodeURIComponent(id));
  shown = m;
  $("message").hidden = false;
  $("message-id").textContent = m.id;
  $("action-result").textContent = "";
  const fields = $("message-fields");
  const now = Date.now() / 1000;
  fields.replaceChildren();
  const pairs = [
    ["queue", m.queue], ["status", m.status], ["sender", m.sender || "<>"],
    ["recipients", m.recipients.join(", ")], ["failed", m.failed.map((f) => f.recipient + ": " + f.reply).join("; ")],
    ["next hops", m.next_hops.join(", ")], ["route", m.route || ""], ["Message-ID", m.message_id || ""],
    ["received", stamp(m.spool_date) + " (" + age(now - m.spool_date) + " ago)"],
    ["next attempt", m.next_attempt ? stamp(m.next_attempt) : ""],
    ["size", m.size + " bytes"], ["quarantine", m.quarantine_reason || ""], ["damaged", m.damaged || ""],
  ];
  for (const [name, value] of pairs) {
    if (value === "") continue;
    const dd = el("dd", value);
    dd.dataset.field = name;
    fields.append(el("dt", name), dd);
  }
  const attempts = m.attempts.map((a) => {
    const tr = el("tr");
    tr.append(el("td", stamp(a.time), "nowrap"), el("td", a.error));
    return tr;
  });
  $("message-attempts").replaceChildren(...attempts);
  $("message-headers").textContent = m.headers.map(([name, value]) => name + ": " + value).join("\n");
  document.querySelector('#actions [data-action="recover"]').disabled = !["removed", "quarantine"].includes(m.queue);
  document.querySelector('#actions [data-action="freeze"]').disabled = m.queue !== "active";
  for (const row of $("list").tBodies[0].rows) row.classList.toggle("chosen", row.dataset.id === m.id);
}

async function act(action) {
  if (action === "close") {
    shown = null;
    $("message").hidden = true;
    return;
  }
  if (!shown) return;
  const body = { ids: [shown.id] };
  if (action === "recover") body.from = shown.queue === "quarantine" ? "quarantine" : "removed";
  try {
    await postJson("/v1/spool/" + action, body);
    $("action-result").textContent = action + ": done";
  } catch (error) {
    $("action-result").textContent = action + ": " + error.message;
    return;
  }
  const id = shown.id;
  await refresh();
  try {
    await openMessage(id);
    $("action-result").textContent = action + ": done";
  } catch (error) {
    $("action-result").textContent = action + ": done (" + error.message + ")";
  }
}

// -- live events: the NDJSON stream, read with fetch() --------------------------------------
async function followEvents() {
  for (;;) {
    try {
      // A ping every 3 s: the server notices a closed page at its next write (so a shutdown
      // of the control plane waits for an open console 3 s at most).
      const response = await api("/v1/spool/events?ping=3");
      if (!response.ok || !response.body) throw new Error(response.statusText);
      $("live").className = "on";
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        const lines = buffer.split("\n");
        buffer = lines.pop();
        for (const line of lines) if (line.trim()) showEvent(JSON.parse(line));
      }
    } catch (error) {
      if (error instanceof Unauthorized) return;
    }
    $("live").className = "off";
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

function showEvent(event) {
  if (event.kind === "ping") return;
  const list = $("event-list");
  const item = el("li", `${clock(event.time)} ${event.kind} ${event.id}${event.detail ? " " + event.detail : ""}${event.queue ? " → " + event.queue : ""}`, "fresh");
  item.dataset.kind = event.kind;
  item.dataset.id = event.id;
  list.prepend(item);
  setTimeout(() => item.classList.remove("fresh"), 3000);
  while (list.children.length > EVENTS_KEPT) list.lastChild.remove();
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refresh, 300); // the queue changed: redraw it (once per burst)
}

// -- start ---------------------------------------------------------------------------------
async function refresh() {
  try {
    await Promise.all([loadCounts(), loadShape(), loadRates(), loadList()]);
  } catch (error) {
    if (error instanceof Unauthorized) showLogin("");
  }
}

function showLogin(message) {
  $("main").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
}

async function start() {
  try {
    await loadServer();
  } catch (error) {
    showLogin(error instanceof Unauthorized ? "" : error.message);
    return;
  }
  $("login").hidden = true;
  $("main").hidden = false;
  await refresh();
  if (started) return;
  started = true;
  setInterval(refresh, REFRESH_MS);
  followEvents();
}

function wire() {
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    $("token").value = "";
    start().then(() => {
      if (!$("login").hidden) $("login-error").textContent = "that token was refused";
    });
  });
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    filters = new URLSearchParams();
    for (const [name, value] of new FormData(event.target)) if (value.trim()) filters.set(name, value.trim());
    loadList().catch(() => showLogin(""));
  });
  $("filters").addEventListener("reset", () => {
    filters = new URLSearchParams();
    setTimeout(() => loadList().catch(() => showLogin("")), 0);
  });
  $("shape-by").addEventListener("change", () => loadShape().catch(() => showLogin("")));
  for (const button of document.querySelectorAll("#actions button")) {
    button.addEventListener("click", () => act(button.dataset.action));
  }
}

takeToken();
wire();
start();
