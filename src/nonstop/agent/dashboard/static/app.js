// The dashboard's pages: data from /api/*, kept live by server-sent events (/api/stream).
(() => {
"use strict";

const { lineChart, legend, fmt, clock } = window.nonstopCharts;
const main = document.getElementById("main");
const app = { csrf: null, page: null, id: null, rollout: null, points: {} };

// -- small DOM helpers (textContent only: nothing from the agent is parsed as HTML) ----------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

const card = (title, ...body) => h("section", { class: "card" }, title ? h("h2", {}, title) : null, ...body);
const table = (head, rows) => h("table", {}, h("thead", {}, h("tr", {}, head.map((c) => h("th", {}, c)))), h("tbody", {}, rows));
const pill = (text, cls) => h("span", { class: `pill ${cls || text}` }, String(text).replace(/_/g, " "));
const when = (ts) => (ts ? new Date(ts * 1000).toLocaleString([], { hour12: false }) : "");

function seconds(s) {
  if (s === null || s === undefined) return "";
  if (s < 60) return `${s.toFixed(1)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${fmt(n)} ${units[i]}`;
}

function bar(percent, cls) {
  const fill = h("span");
  fill.style.width = `${Math.max(0, Math.min(100, percent || 0))}%`;
  return h("div", { class: `bar ${cls || ""}` }, fill);
}

function toast(text, error) {
  const el = document.getElementById("toast");
  el.textContent = text;
  el.className = error ? "error" : "";
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, 8000);
}

// -- requests --------------------------------------------------------------------------------

async function getJSON(path) {
  const response = await fetch(path, { credentials: "same-origin" });
  if (response.status === 401) { location.reload(); throw new Error("logged out"); }
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || `${path}: HTTP ${response.status}`);
  return data;
}

function confirmAction(text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.returnValue = "";  // Escape closes without a value: never the last answer's "ok"
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
}

const ACTION_TEXT = {
  promote: "Promote: end this step and go on to the next one?",
  promote_full: "Promote fully: send all traffic to the new release now, skipping the remaining steps?",
  pause: "Pause the rollout where it is?",
  resume: "Resume the rollout?",
  abort: "Abort the rollout and send traffic back to the stable release?",
  rollback: "Roll back to the previous release?",
};

async function act(action) {
  if (!(await confirmAction(ACTION_TEXT[action]))) return;
  const response = await fetch(`/api/actions/${action}`, {
    method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": app.csrf },
  });
  const data = await response.json().catch(() => ({}));
  if (response.ok) toast(`${data.message} (rollout ${data.rollout})`);
  else toast(`${action} refused: ${data.error || "HTTP " + response.status}`, true);
}

function actions(rollout) {
  const names = rollout && rollout.status === "running"
    ? [rollout.paused ? "resume" : "pause", "promote", "promote_full", "abort", "rollback"]
    : ["rollback"];
  const keep = `actions:${rollout ? rollout.id : ""}:${names.join(",")}`;
  return h("div", { class: "actions", "data-keep": keep }, names.map((name) =>
    h("button", { "data-action": name, class: ["abort", "rollback"].includes(name) ? "danger" : "", onclick: () => act(name) },
      name.replace("_", " "))));
}

// -- overview --------------------------------------------------------------------------------

// Replace the page's content with ``nodes``, keeping elements marked data-keep that are the
// same as before (the action buttons): a live update never swaps a button out from under a
// pointer about to click it.
function show(...nodes) {
  const kept = new Map([...main.querySelectorAll("[data-keep]")].map((el) => [el.dataset.keep, el]));
  const box = document.createDocumentFragment();
  box.append(...nodes.filter((n) => n !== null && n !== undefined));
  for (const fresh of box.querySelectorAll("[data-keep]")) {
    const old = kept.get(fresh.dataset.keep);
    if (old) fresh.replaceWith(old);
  }
  main.replaceChildren(box);
}

function renderOverview(d) {
  const rollout = d.rollout;
  show(
    h("h1", {}, `${d.app} `, h("span", { class: "muted" }, `on ${d.router.listen}`)),
    h("div", { class: "grid" },
      card("Active release", h("div", { class: "big", id: "active-release" }, d.active_release || "none"),
        h("div", { class: "muted" }, d.previous_release ? `previous: ${d.previous_release}` : "no previous release")),
      card("Health", health(d)),
      card("State dir", h("div", { class: "big" }, bytes(d.state_dir.bytes)), h("div", { class: "muted" }, h("code", {}, d.state_dir.path)))),
    card("Rollout", rollout ? rolloutSummary(rollout, d) : [h("p", { class: "muted", id: "no-rollout" }, "no rollout in progress"), actions(null)]),
    card("Weights", weights(d)),
    card("Instances", instances(d.instances)),
    card("Recent events", timeline(d.events.slice().reverse(), null)));
}

function health(d) {
  const degraded = d.degraded || [];
  const uptime = Date.now() / 1000 - d.agent.started_at;
  return h("div", {},
    h("div", {}, "router ", h("b", {}, d.router.kind), " ", d.router.alive ? pill("up", "ok") : pill("down", "bad")),
    h("div", {}, `agent pid ${d.agent.pid}, nonstop ${d.agent.version}, up ${seconds(uptime)} `,
      degraded.length ? pill("degraded", "bad") : pill("healthy", "ok")),
    degraded.map((p) => h("div", { class: "bad degraded" }, `degraded: ${p.why} (${p.what}, since ${clock(p.since)})`)));
}

function rolloutSummary(r, d) {
  const step = r.strategy === "canary" && r.phase === "step" ? `, step ${r.step + 1}` : "";
  return h("div", { id: "rollout-summary" },
    h("div", { class: "big" }, h("a", { href: `/rollouts/${r.id}` }, `rollout ${r.id}`), ` ${r.stable || "nothing"} → ${r.candidate}`),
    h("div", {}, `${r.strategy}, phase `, h("b", { id: "rollout-phase" }, r.phase), step, " ",
      r.paused ? pill("paused", "paused") : pill("running", "running")),
    h("div", { class: "muted" }, `started ${when(r.started_at)}`),
    actions(r));
}

function weights(d) {
  const set = d.weights || {};
  const measured = d.measured_weights;
  const names = [...new Set([...Object.keys(set), ...Object.keys(measured.percent)])].sort();
  if (!names.length) return h("p", { class: "muted" }, "nothing routed yet");
  return [table(["release", "set", "", `measured (last ${measured.window_s}s, ${measured.requests} requests)`, ""],
    names.map((n) => h("tr", { "data-release": n }, h("td", {}, n),
      h("td", {}, set[n] === undefined ? "-" : `${set[n]}%`), h("td", {}, bar(set[n])),
      h("td", { class: "measured-share" }, measured.percent[n] === null || measured.percent[n] === undefined ? "-" : `${measured.percent[n]}%`),
      h("td", {}, bar(measured.percent[n], "measured")))))];
}

function instances(rows) {
  if (!rows.length) return h("p", { class: "muted" }, "no instances");
  const sorted = rows.slice().sort((a, b) => (a.release + (a.role || "") + a.id).localeCompare(b.release + (b.role || "") + b.id));
  const roles = rows.some((r) => r.role);
  return table(["release", ...(roles ? ["role"] : []), "instance", "state", "address", "pid", "restarts", "problem"],
    sorted.map((i) => h("tr", { "data-instance": i.id }, h("td", {}, i.release), roles ? h("td", {}, i.role || "") : null,
      h("td", {}, i.id), h("td", {}, pill(i.state)), h("td", {}, i.address || ""), h("td", {}, i.pid || ""),
      h("td", {}, i.restarts || 0), h("td", { class: "bad" }, i.failed || ""))));
}

function timeline(events, steps) {
  return h("ol", { class: "timeline" }, events.map((e) =>
    h("li", { class: e.level }, h("time", {}, clock(e.ts)),
      /^step \d+\/\d+/.test(e.message) ? h("span", { class: "step" }, e.message) : e.message)));
}

// -- a rollout -------------------------------------------------------------------------------

function renderRollout(d) {
  const r = d.rollout;
  const v = d.verdict;
  show(
    h("h1", {}, `rollout ${r.id}: ${r.strategy} ${r.stable || "nothing"} → ${r.candidate} `, pill(v.outcome)),
    card("Outcome", h("div", { class: "reason", id: "verdict" }, h("b", {}, v.outcome.replace("_", " ")), v.reason ? `: ${v.reason}` : ""),
      h("div", { class: "muted" }, `started ${when(r.started_at)}`, r.finished_at ? `, took ${seconds(r.finished_at - r.started_at)}` : `, phase ${d.state.phase}, step ${(d.state.step || 0) + 1}`),
      r.status === "running" ? actions({ ...r, paused: d.state.paused }) : null),
    d.plan ? card("Steps", stepStrip(d)) : null,
    h("section", { class: "card" }, h("h2", {}, "Traffic per release"), h("div", { id: "charts" })),
    h("section", { class: "card", id: "analysis" }, h("h2", {}, "Analysis (as `nonstop analysis explain`)"), analysis(d.analysis)),
    card("Timeline", timeline(d.events, d.steps)));
  drawCharts();
}

// A canary's steps, each done, under way or to come, with when it began.
function stepStrip(d) {
  const r = d.rollout;
  const began = Object.fromEntries(d.steps.map((m) => [Number(m.label.split(/[ /]/)[1]) - 1, m.ts]));
  const current = d.state.step ?? -1;
  return h("ol", { class: "steps" }, d.plan.map((step, i) => {
    const state = r.status === "completed" || i < current ? "done"
      : r.status !== "running" ? (i === current ? "stopped" : "skipped")
      : i === current ? (d.state.paused ? "paused" : "current") : "todo";
    const pause = step.pause === null || step.pause === undefined ? null : typeof step.pause === "number" ? `pause ${seconds(step.pause)}` : `pause ${step.pause}`;
    return h("li", { class: `step-${state}`, "data-step": i + 1 },
      h("b", {}, `${i + 1}`), step.weight === null ? "" : ` ${step.weight}%`,
      pause ? h("div", { class: "muted" }, pause) : null,
      step.analysis.length ? h("div", { class: "muted" }, step.analysis.join(", ")) : null,
      began[i] ? h("div", { class: "muted" }, clock(began[i])) : null);
  }));
}

function mergePoints(charts, replace) {
  if (replace) app.points = {};
  for (const [release, points] of Object.entries(charts.series)) {
    const known = app.points[release] || new Map();
    for (const p of points) known.set(p[0], p);
    app.points[release] = known;
  }
  app.chartSpan = { from: charts.from, until: charts.until };
}

function drawCharts() {
  const box = document.getElementById("charts");
  if (!box || !app.chartSpan) return;
  const names = Object.keys(app.points);
  const { from, until } = app.chartSpan;
  const marks = app.rollout ? app.rollout.steps : [];
  const series = (pick) => Object.fromEntries(names.map((n) => [n, fill([...app.points[n].values()].sort((a, b) => a[0] - b[0]), pick)]));
  box.replaceChildren(legend(names), h("div", { class: "charts" },
    lineChart({ title: "requests / s", unit: "", from, until, marks, series: series((p) => p[1]) }),
    lineChart({ title: "error rate (5xx)", unit: "%", from, until, marks, series: series((p) => (p[1] ? (100 * p[2]) / p[1] : null)) }),
    lineChart({ title: "p50 latency", unit: "ms", from, until, marks, series: series((p) => p[3]) }),
    lineChart({ title: "p99 latency", unit: "ms", from, until, marks, series: series((p) => p[4]) })));
}

// A second without traffic is zero requests and no rate or latency: the rate line drops to
// zero there, the others break (never a line drawn across a gap).
function fill(points, pick) {
  const out = [];
  let last = null;
  for (const p of points) {
    if (last !== null && p[0] > last + 1) {
      out.push([last + 1, pick([last + 1, 0, 0, null, null])], [p[0] - 1, pick([p[0] - 1, 0, 0, null, null])]);
    }
    out.push([p[0], pick(p)]);
    last = p[0];
  }
  return out;
}

function analysis(a) {
  const parts = [];
  if (!a.analyses.length && !a.sequential) parts.push(h("p", { class: "muted" }, "no analysis ran in this rollout"));
  for (const run of a.analyses) {
    parts.push(h("h3", {}, `${run.name} analysis: ${run.phase}, verdict `, pill(run.verdict.outcome), ` ${run.verdict.reason}`));
    parts.push(table(["check", "samples", "value", "threshold", "verdict", "reason"], run.rows.map((row) =>
      h("tr", { "data-check": row.check }, h("td", {}, row.check), h("td", {}, row.samples),
        h("td", {}, row.value === null ? "-" : `${fmt(row.value)}${row.unit}`), h("td", {}, row.threshold),
        h("td", {}, pill(row.verdict)), h("td", {}, row.reason)))));
  }
  if (a.sequential) {
    const s = a.sequential;
    parts.push(h("h3", {}, "sequential test"), h("p", {},
      `e-value ${fmt(s.e_value)} (rejects at ${fmt(s.threshold)}, alpha ${s.alpha}), ${s.rejected ? "rejected the canary" : "not rejected"}: `,
      `canary ${s.canary.errors}/${s.canary.requests} errors, stable ${s.stable.errors}/${s.stable.requests}; last: ${s.row.reason}`));
  }
  if (a.reason) parts.push(h("p", { class: "reason" }, h("b", {}, "reason: "), a.reason));
  return parts;
}

// -- history, flags, migrations --------------------------------------------------------------

function renderHistory(d) {
  main.replaceChildren(h("h1", {}, "History"),
    card("Rollouts", table(["#", "strategy", "from → to", "outcome", "reason", "started", "took"], d.rollouts.map((r) =>
      h("tr", { "data-rollout": r.id }, h("td", {}, h("a", { href: `/rollouts/${r.id}` }, r.id)), h("td", {}, r.rollback ? "rollback" : r.strategy),
        h("td", {}, `${r.stable || "nothing"} → ${r.candidate}`), h("td", {}, pill(r.status)), h("td", {}, r.reason || ""),
        h("td", {}, when(r.started_at)), h("td", {}, r.duration_s === null ? `running (${r.phase})` : seconds(r.duration_s)))))),
    card("Releases", table(["release", "created"], d.releases.map((r) => h("tr", {}, h("td", {}, r.name), h("td", {}, when(r.created_at)))))));
}

function renderFlags(d) {
  main.replaceChildren(h("h1", {}, "Flags"), d.flags.length ? card(null, table(
    ["flag", "state", "rollout", "strategies", "guarded rollout", "description"], d.flags.map((f) =>
      h("tr", { "data-flag": f.name }, h("td", {}, h("b", {}, f.name)), h("td", {}, pill(f.enabled ? "on" : "off")),
        h("td", {}, f.rollout || ""), h("td", {}, f.strategy_names.join(", ") || "none"),
        h("td", {}, f.guarded ? [pill(f.guarded.status), ` ${f.guarded.percent ?? ""}% of ${f.guarded.steps.join(" → ")}%`, f.guarded.reason ? h("div", { class: "muted" }, f.guarded.reason) : null] : ""),
        h("td", { class: "muted" }, f.description))))) : card(null, h("p", { class: "muted" }, "no flags (nonstop flags create NAME)")));
}

// Rows a backfill updated; while it runs, out of the table's estimated size, with a bar.
function migrationRows(m) {
  if (m.progress_rows === undefined) return m.rows === undefined || m.rows === null ? "" : m.rows.toLocaleString();
  if (!m.progress_total) return m.progress_rows.toLocaleString();
  const percent = Math.min(100, (100 * m.progress_rows) / m.progress_total);
  return [`${m.progress_rows.toLocaleString()} / ~${m.progress_total.toLocaleString()} (${percent.toFixed(0)}%)`, bar(percent)];
}

function renderMigrations(d) {
  const body = !d.configured ? h("p", { class: "muted" }, d.message)
    : d.error ? h("p", { class: "bad" }, d.error)
    : table(["migration", "phase", "status", "finished", "took", "attempts", "rows"], d.entries.map((m) =>
      h("tr", { "data-migration": m.name }, h("td", {}, m.name), h("td", {}, m.phase), h("td", {}, pill(m.status)),
        h("td", {}, when(m.finished_at)), h("td", {}, m.duration_s === undefined || m.duration_s === null ? "" : seconds(m.duration_s)),
        h("td", {}, m.attempts ?? ""), h("td", { class: "rows" }, migrationRows(m)))));
  main.replaceChildren(h("h1", {}, "Migrations"), card(null, body));
}

// -- routing and the live stream -------------------------------------------------------------

const PAGES = {
  overview: { api: () => "/api/overview", render: renderOverview },
  history: { api: () => "/api/history", render: renderHistory },
  flags: { api: () => "/api/flags", render: renderFlags },
  migrations: { api: () => "/api/migrations", render: renderMigrations },
  rollout: { api: () => `/api/rollouts/${app.id}`, render: (d) => { app.rollout = d; mergePoints(d.charts, true); renderRollout(d); } },
};

function route() {
  const path = location.pathname;
  const match = path.match(/^\/rollouts\/(\d+)$/);
  if (match) { app.page = "rollout"; app.id = match[1]; }
  else app.page = { "/history": "history", "/flags": "flags", "/migrations": "migrations" }[path] || "overview";
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("current", a.dataset.page === app.page);
}

function live(state) {
  const el = document.getElementById("live");
  el.textContent = state;
  el.className = `live ${state === "live" ? "is-live" : state === "reconnecting" ? "is-down" : ""}`;
}

function stream() {
  const query = app.page === "rollout" ? `page=rollout&id=${app.id}` : `page=${app.page}`;
  const source = new EventSource(`/api/stream?${query}`);
  source.onopen = () => live("live");
  // The browser reconnects by itself; a session that ended (an agent restart) shows the
  // log-in page instead of reconnecting forever.
  source.onerror = () => { live("reconnecting"); getJSON("/api/session").catch(() => {}); };
  const on = (name, fn) => source.addEventListener(name, (e) => fn(JSON.parse(e.data)));
  on("problem", (p) => toast(`the agent could not read this page's data: ${p.error}`, true));
  if (app.page === "rollout") {
    on("rollout", (d) => { app.rollout = { ...d, charts: app.rollout.charts }; renderRollout(app.rollout); });
    on("points", (charts) => { mergePoints(charts, false); drawCharts(); });
  } else {
    on(app.page, PAGES[app.page].render);
  }
}

async function logout() {
  await fetch("/logout", { method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": app.csrf } });
  location.reload();
}

async function start() {
  route();
  document.getElementById("logout").addEventListener("click", logout);
  try {
    app.csrf = (await getJSON("/api/session")).csrf;
    PAGES[app.page].render(await getJSON(PAGES[app.page].api()));
    stream();
  } catch (err) {
    main.replaceChildren(h("p", { class: "bad" }, String(err.message || err)));
  }
}

start();
})();
