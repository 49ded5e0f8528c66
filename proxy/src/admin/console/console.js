// The strangler console: reads the admin API (the same JSON the CLI reads), refreshes every
// 3 s, and sends commands with the admin token, which is asked for once and kept in this tab
// only (sessionStorage). No framework, nothing fetched from anywhere but this listener.
"use strict";

const REFRESH_MS = 3000;
const state = {
  tab: "map",
  moved: [],        // share of traffic served by new services, one point per refresh
  lastCounts: null, // requests per side at the previous refresh
  lastMetrics: null,
  lastMetricsAt: 0,
  mismatchFilter: null,
  openMismatch: null,
  contexts: [],
};

const $ = (sel) => document.querySelector(sel);
const token = () => sessionStorage.getItem("strangler-token") || "";

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return e;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows.map((cells) => el("tr", {}, ...cells.map((c) => c instanceof Node && c.tagName === "TD" ? c : el("td", {}, c)))));
}

const pct = (x) => (x == null || Number.isNaN(x) ? "–" : `${(x * 100).toFixed(1)} %`);
const when = (ms) => new Date(ms).toLocaleString();
const ago = (ms) => {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 90 ? `${s} s ago` : s < 5400 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
};

class Locked extends Error {}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let v = {};
  try { v = text ? JSON.parse(text) : {}; } catch { v = { error: text }; }
  if (r.status === 401) throw new Locked(v.error || "the admin token is needed");
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${v.error || ""}`);
  return v;
}

function showError(message) {
  const a = $("#alert");
  if (!message) { a.hidden = true; return; }
  a.textContent = message;
  a.hidden = false;
}

// Reads what a section needs; a locked endpoint hides its table and says why.
async function guarded(lockedSel, f) {
  try {
    const v = await f();
    if (lockedSel) $(lockedSel).hidden = true;
    return v;
  } catch (e) {
    if (e instanceof Locked && lockedSel) { $(lockedSel).hidden = false; return null; }
    throw e;
  }
}

function spark(svg, points) {
  if (points.length < 2) { svg.replaceChildren(); return; }
  const xs = points.map((_, i) => (i / (points.length - 1)) * 300);
  const ys = points.map((p) => 38 - p * 36);
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", xs.map((x, i) => `${x.toFixed(1)},${ys[i].toFixed(1)}`).join(" "));
  svg.replaceChildren(line);
}

// ---- migration map ----
async function renderMap(rollouts) {
  const routes = await guarded("#routes-locked", () => api("GET", "/api/routes"));
  const status = await api("GET", "/api/rules");
  $("#reload-line").textContent = status.ok
    ? `rules generation ${status.generation}, reloaded ${ago(Number(status.at_unix_ms))} (${status.trigger})`
    : `last reload REJECTED (${status.errors.length} errors): see Rules`;
  $("#reload-line").className = status.ok ? "muted" : "bad";
  $("#route-count").textContent = status.routes;
  fill($("#contexts-table tbody"), rollouts.contexts.map((c) => [
    c.context, c.service, c.routes.join(", "), `${c.weight} %`,
    c.state ? c.state.phase : c.plan ? "not started" : "fixed weight",
  ]));
  if (!routes) { $("#routes-table").hidden = true; return; }
  $("#routes-table").hidden = false;
  let legacy = 0, service = 0;
  for (const r of routes.routes) { legacy += r.requests.legacy; service += r.requests.service || 0; }
  legacy += routes.default.requests;
  if (state.lastCounts) {
    const dl = legacy - state.lastCounts.legacy, ds = service - state.lastCounts.service;
    if (dl + ds > 0) {
      state.moved.push(ds / (dl + ds));
      if (state.moved.length > 120) state.moved.shift();
    }
  }
  state.lastCounts = { legacy, service };
  const total = legacy + service;
  $("#moved").textContent = state.moved.length ? pct(state.moved[state.moved.length - 1]) : total ? pct(service / total) : "–";
  spark($("#moved-spark"), state.moved);
  fill($("#routes-table tbody"), routes.routes.map((r) => [
    r.name, r.file, r.context || "", r.target,
    r.pinned ? "pinned" : `${r.weight} %`, String(r.requests.legacy), String(r.requests.service ?? 0),
  ]));
}

// ---- rollouts ----
// A gate's figure and bound in its own unit: match rate in %, 5xx increase in points, p99 as a
// ratio to the monolith's.
function gateFigure(gate, x) {
  if (x == null) return "–";
  if (gate === "match_rate") return `${(x * 100).toFixed(2)} %`;
  if (gate === "error_rate") return `${x >= 0 ? "+" : ""}${(x * 100).toFixed(2)} pp`;
  if (gate === "p99_latency") return `×${x.toFixed(2)}`;
  return String(x);
}

const BOUND = { match_rate: "≥", error_rate: "≤", p99_latency: "≤" };

// The last check's gates (measured against threshold), or before any check the plan's gates.
function gatesTable(p, s) {
  const check = s.last_check;
  if (!check) {
    const names = Object.entries(p.gates || {}).filter(([, g]) => g).map(([name]) => name);
    return el("div", { class: "gates muted" }, names.length ? `gates: ${names.join(", ")}; no check yet` : "no gates: steps on time and evidence only");
  }
  const table = el("table", { class: "gates" },
    el("thead", {}, el("tr", {}, ...["gate", "measured", "threshold", "verdict", "detail"].map((h) => el("th", {}, h)))),
    el("tbody"));
  fill(table.tBodies[0], check.gates.map((g) => {
    const verdict = g.passed === true ? el("td", { class: "ok" }, "held") : g.passed === false ? el("td", { class: "bad" }, "failed") : el("td", { class: "warn" }, "no data");
    return [g.gate, el("td", { class: "num" }, gateFigure(g.gate, g.value)),
      el("td", { class: "num" }, g.threshold == null ? "–" : `${BOUND[g.gate] || ""} ${gateFigure(g.gate, g.threshold)}`),
      verdict, g.detail];
  }));
  const box = el("div", { class: "gates" }, el("div", { class: "muted" }, `last check ${ago(check.at_ms)}`));
  if (check.gates.length) box.append(table);
  else box.append(el("div", { class: "muted" }, "no gates: steps on time and evidence only"));
  return box;
}

// Evidence at this step against what leaving it needs.
function evidenceLine(e) {
  const bar = el("div");
  bar.style.width = `${Math.min(100, (100 * e.seen) / Math.max(1, e.needed))}%`;
  return el("div", { class: "evidence" },
    el("div", {}, `${e.seen} of ${e.needed} ${e.counted} at this step`),
    el("div", { class: "bar thin" }, bar));
}

function rolloutCard(c) {
  const s = c.state, p = c.plan;
  const card = el("div", { class: "card rollout", "data-context": c.context });
  const phaseClass = s && s.phase === "rolled_back" ? "bad" : s && s.phase === "completed" ? "ok" : "";
  card.append(el("div", { class: "head" },
    el("b", {}, c.context), el("span", { class: "muted" }, `→ ${c.service}`),
    el("span", { class: phaseClass }, s ? s.phase : "no state yet"),
    el("span", { class: "weight" }, `${c.weight} %`)));
  const fillBar = el("div");
  fillBar.style.width = `${Math.min(100, c.weight)}%`; // CSSOM: allowed under the page's CSP
  card.append(el("div", { class: "bar" }, fillBar));
  if (p && s) {
    const steps = p.steps.map((st) => (st === "pause" ? "pause" : `${st.weight / 100} %`));
    const next = s.checked_ms + Math.min(p.check_every_ms, p.interval_ms) - Date.now();
    const checked = s.phase === "progressing" || s.phase === "completed";
    const checkLine = checked ? `; next check ${next > 0 ? `in ${Math.ceil(next / 1000)} s` : "due"}` : "; not checked while " + s.phase.replace("_", " ");
    card.append(el("div", {}, `step ${s.step + 1} of ${steps.length} (${steps.join(" → ")}), at least ${p.min_requests} requests and ${p.interval_ms / 1000} s per step${checkLine}`));
    card.append(el("div", { class: "muted" }, `why: ${s.reason}`));
    if (s.phase === "progressing" && s.last_check && s.last_check.evidence) card.append(evidenceLine(s.last_check.evidence));
    card.append(gatesTable(p, s));
  } else if (!p) {
    card.append(el("div", { class: "muted" }, "no rollout plan: the weight is the rule file's"));
  }
  if (p) {
    const act = (label, action, cls, ask) => el("button", { type: "button", class: cls || "", "data-action": action, onclick: () => command(c.context, action, ask) }, label);
    card.append(el("div", { class: "actions-row" },
      act("Pause", "pause", "", `Hold ${c.context} at ${c.weight} %?`),
      act("Resume", "resume", "", `Resume ${c.context}'s rollout (traffic may move to ${c.service})?`),
      act("Promote", "promote", "", `Move ${c.context} past its current step now?`),
      act("Roll back", "rollback", "danger", `Send all of ${c.context}'s traffic back to the monolith?`),
      el("button", { type: "button", "data-action": "weight", onclick: () => setWeight(c) }, "Set weight…")));
  }
  return card;
}

async function command(context, action, question) {
  if (!confirm(question)) return;
  try {
    await api("POST", `/api/rollouts/${encodeURIComponent(context)}/${action}`);
    showError(null);
  } catch (e) { showError(e.message); }
  refresh();
}

async function setWeight(c) {
  const w = prompt(`New weight for ${c.context} (percent of its traffic to ${c.service}); the plan pauses there:`, String(c.weight));
  if (w === null) return;
  const weight = Number(w);
  if (!(weight >= 0 && weight <= 100)) { showError("a weight is a number from 0 to 100"); return; }
  if (!confirm(`Set ${c.context} to ${weight} %?`)) return;
  try { await api("POST", `/api/rollouts/${encodeURIComponent(c.context)}/weight`, { weight }); showError(null); } catch (e) { showError(e.message); }
  refresh();
}

async function renderRollouts(rollouts) {
  $("#rollout-cards").replaceChildren(...rollouts.contexts.map(rolloutCard));
  const audit = await guarded("#audit-locked", () => api("GET", "/api/audit?limit=50"));
  $("#audit-table").hidden = !audit;
  if (audit) fill($("#audit-table tbody"), audit.entries.map((a) => [
    when(a.at_ms), a.context, a.actor, `${a.from_weight_bp / 100} → ${a.to_weight_bp / 100} %`, a.phase, a.reason,
  ]));
}

async function killSwitch(on) {
  const q = on ? "Turn the kill switch ON: every context to the monolith, on every replica?" : "Turn the kill switch off: contexts go back to their weights?";
  if (!confirm(q)) return;
  try { await api(on ? "POST" : "DELETE", "/api/kill-switch"); showError(null); } catch (e) { showError(e.message); }
  refresh();
}

// ---- shadow ----
async function renderShadow() {
  const s = await api("GET", "/api/shadow");
  $("#shadow-routes").replaceChildren(...s.routes.map((r) => {
    const card = el("div", { class: "card" });
    card.append(el("div", { class: "head" }, el("b", {}, r.route), " ",
      el("span", {}, `match rate ${pct(r.match_rate_5m)} (5 min), ${pct(r.match_rate)} since start`)));
    card.append(el("div", { class: "muted" }, `${r.compared} compared: ${r.matched} matched, ${r.mismatched} mismatched, ${r.errors} errors, ${r.timeouts} timeouts`));
    const list = el("ul");
    for (const [pattern, n] of r.top_patterns) {
      list.append(el("li", {}, el("a", { class: "pattern", onclick: () => { state.mismatchFilter = { route: r.route, pattern }; refresh(); } }, pattern), ` × ${n}`));
    }
    if (r.top_patterns.length) card.append(el("div", {}, "top differences:"), list);
    if (r.noise.length) card.append(el("div", { class: "muted" }, `noise: ${r.noise.map((n) => `${n.pattern} (${n.kind}, differed in ${n.differed} of ${n.of})`).join(", ")}`));
    return card;
  }));
  const f = state.mismatchFilter;
  const q = f ? `?route=${encodeURIComponent(f.route)}&pattern=${encodeURIComponent(f.pattern)}` : "";
  $("#mismatches-title").textContent = f ? `Mismatches of ${f.route} at ${f.pattern}` : "Mismatches";
  const m = await guarded("#mismatches-locked", () => api("GET", `/api/shadow/mismatches${q ? `${q}&` : "?"}limit=20`));
  $("#mismatches-table").hidden = !m;
  if (m) fill($("#mismatches-table tbody"), m.mismatches.map((x) => [
    el("td", {}, el("a", { class: "pattern", "data-mismatch": String(x.id), onclick: () => openMismatch(x.id) }, `#${x.id}`)),
    when(x.at_ms), x.route, `${x.method} ${x.path}`, String(x.differences), x.patterns.join(", "),
  ]));
}

function pretty(body) {
  try { return JSON.stringify(JSON.parse(body), null, 2); } catch { return body; }
}

// The body, with each line that holds a differing member's key highlighted.
function highlighted(pre, body, differences) {
  const keys = differences.map((d) => (d.location.match(/\.([^.\[\]]+)(\[\d+\])*$/) || [])[1]).filter(Boolean);
  pre.replaceChildren(...pretty(body).split("\n").flatMap((line) => {
    const hit = keys.some((k) => line.includes(`"${k}":`));
    return [hit ? el("mark", {}, line) : document.createTextNode(line), document.createTextNode("\n")];
  }));
}

async function openMismatch(id) {
  try {
    const m = await api("GET", `/api/shadow/mismatches/${id}`);
    state.openMismatch = id;
    $("#mismatch-view").hidden = false;
    $("#mismatch-title").textContent = `#${m.id}: ${m.method} ${m.path} on ${m.route}, ${when(m.at_ms)}`;
    const diffs = Array.isArray(m.differences) ? m.differences : [];
    fill($("#difference-table tbody"), diffs.map((d) => [d.location, JSON.stringify(d.expected ?? null), JSON.stringify(d.actual ?? null)]));
    $("#expected-title").textContent = `monolith: ${m.expected.status}`;
    $("#actual-title").textContent = `new service: ${m.actual.status}`;
    highlighted($("#expected-body"), m.expected.body, diffs);
    highlighted($("#actual-body"), m.actual.body, diffs);
    $("#mismatch-view").scrollIntoView({ behavior: "smooth" });
    showError(null);
  } catch (e) { showError(e.message); }
}

// ---- events ----
function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-z_:]+)(\{(.*)\})? ([^ ]+)/);
    if (!m) continue;
    const labels = {};
    for (const kv of (m[3] || "").matchAll(/([a-z_]+)="((?:[^"\\]|\\.)*)"/g)) labels[kv[1]] = kv[2];
    out.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return out;
}

async function renderEvents() {
  const outbox = await api("GET", "/api/outbox");
  const metrics = parseMetrics(await (await fetch("/metrics")).text());
  const now = Date.now();
  const sum = (ms, name, stream) => ms.filter((m) => m.name === name && m.labels.stream === stream).reduce((a, m) => a + m.value, 0);
  const streams = new Set(outbox.streams.map((s) => s.stream));
  for (const m of metrics) if (m.name === "strangler_stream_up") streams.add(m.labels.stream);
  const rate = (name, stream) => {
    if (!state.lastMetrics) return "–";
    const dt = (now - state.lastMetricsAt) / 1000;
    return dt > 0 ? ((sum(metrics, name, stream) - sum(state.lastMetrics, name, stream)) / dt).toFixed(1) : "–";
  };
  fill($("#outbox-table tbody"), [...streams].sort().map((stream) => {
    const o = outbox.streams.find((s) => s.stream === stream) || { depth: 0, oldest_age_seconds: 0 };
    const up = metrics.find((m) => m.name === "strangler_stream_up" && m.labels.stream === stream);
    return [stream, el("td", { class: up && up.value === 0 ? "bad" : "ok" }, up ? (up.value ? "up" : "DOWN") : "not used yet"),
      String(o.depth), o.depth ? `${o.oldest_age_seconds.toFixed(1)} s` : "–",
      rate("strangler_events_published_total", stream), rate("strangler_events_failed_total", stream),
      String(sum(metrics, "strangler_events_dead_lettered_total", stream))];
  }));
  state.lastMetrics = metrics;
  state.lastMetricsAt = now;
  renderConsumers(await api("GET", "/api/consumers"));
  const dead = await guarded("#dead-locked", () => api("GET", "/api/dead-letters"));
  $("#dead-table").hidden = !dead;
  if (dead) fill($("#dead-table tbody"), dead.dead_letters.map((d) => [String(d.seq), d.stream, d.partition_key, String(d.attempts), d.reason]));
  const replays = await guarded(null, () => api("GET", "/api/replays")).catch(() => null);
  if (replays) fill($("#replays-table tbody"), replays.replays.map((j) => [
    String(j.id), j.state, `${j.done} / ${j.total}`, `${j.stream || j.route || ""}${j.type ? ` ${j.type}` : ""}${j.to_stream ? ` → ${j.to_stream}` : ""}`,
  ]));
}

// Each configured consumer's shards as it reports them (read by the proxy from its metrics).
function renderConsumers(c) {
  $("#consumers-none").hidden = c.consumers.length > 0;
  $("#consumers-table").hidden = c.consumers.length === 0;
  const rows = [];
  for (const x of c.consumers) {
    if (x.error) { rows.push([x.name, el("td", { class: "bad", colspan: "5" }, `not answering: ${x.error}`)]); continue; }
    if (!x.shards.length) rows.push([x.name, el("td", { class: "muted", colspan: "5" }, "no shard read yet")]);
    for (const s of x.shards) {
      const behind = s.behind_seconds == null ? "read to its end" : `${s.behind_seconds.toFixed(1)} s`;
      rows.push([x.name, s.stream, s.shard,
        el("td", { class: `num ${s.behind_seconds > 60 ? "bad" : ""}` }, behind),
        el("td", { class: "num" }, String(s.applied)), el("td", { class: "num" }, String(s.duplicates))]);
    }
  }
  fill($("#consumers-table tbody"), rows);
}

// ---- rules ----
async function renderRules() {
  const s = await api("GET", "/api/rules");
  $("#rules-line").textContent = `${s.ok ? "Last reload accepted" : "Last reload REJECTED; the rules before it keep serving"}: generation ${s.generation}, ${s.routes} routes, ${ago(Number(s.at_unix_ms))}, by ${s.trigger}.`;
  $("#rules-line").className = s.ok ? "" : "bad";
  $("#rules-errors").replaceChildren(...s.errors.map((e) => el("li", {}, e)));
}

async function refresh() {
  try {
    const rollouts = await api("GET", "/api/rollouts");
    state.contexts = rollouts.contexts;
    const k = $("#kill");
    k.textContent = rollouts.kill_switch ? "KILL SWITCH ON" : "kill switch off";
    k.className = rollouts.kill_switch ? "pill on" : "pill";
    await renderMap(rollouts);
    if (state.tab === "rollouts") await renderRollouts(rollouts);
    if (state.tab === "shadow") await renderShadow();
    if (state.tab === "events") await renderEvents();
    if (state.tab === "rules") await renderRules();
    $("#updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    if (!$("#alert").dataset.sticky) showError(null);
  } catch (e) {
    showError(`cannot read the admin API: ${e.message}`);
  }
}

function show(tab) {
  state.tab = ["map", "rollouts", "shadow", "events", "rules"].includes(tab) ? tab : "map";
  for (const s of document.querySelectorAll("section.tab")) s.hidden = s.id !== state.tab;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.tab === state.tab);
  refresh();
}

document.addEventListener("DOMContentLoaded", () => {
  window.addEventListener("hashchange", () => show(location.hash.slice(1)));
  $("#kill-on").addEventListener("click", () => killSwitch(true));
  $("#kill-off").addEventListener("click", () => killSwitch(false));
  $("#redrive").addEventListener("click", async () => {
    if (!confirm("Put every dead letter back in the outbox (same ids)?")) return;
    try { await api("POST", "/api/dead-letters/redrive"); showError(null); } catch (e) { showError(e.message); }
    refresh();
  });
  $("#reload").addEventListener("click", async () => {
    try { await api("POST", "/api/reload"); showError(null); } catch (e) { showError(e.message); }
    refresh();
  });
  $("#token-button").addEventListener("click", () => { $("#token-input").value = token(); $("#token-dialog").showModal(); });
  $("#token-dialog").addEventListener("close", () => {
    if ($("#token-dialog").returnValue === "save") sessionStorage.setItem("strangler-token", $("#token-input").value.trim());
    refresh();
  });
  show(location.hash.slice(1));
  setInterval(refresh, REFRESH_MS);
});
