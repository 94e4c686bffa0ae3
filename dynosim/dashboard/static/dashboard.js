// dynosim's dashboard: the running app, live. Reads come from /api/*, live data from two
// server-sent event streams (a tick a second, and the log stream); changes are JSON POSTs through
// the same verbs as the CLI. Charts are uPlot's, on one shared time axis.
"use strict";

const RING_SECONDS = 3600;
const KEEP_LOG_LINES = 2000;
const EVENT_COLOURS = {
  crash: "#c0392b", R14: "#e67e22", R15: "#c0392b", restart: "#2980b9", cycle: "#8e44ad",
  deploy: "#16a085", release: "#16a085", rollback: "#d35400", config: "#7f8c8d", scale: "#2c3e50",
  fault: "#e74c3c",
};
const STATUS_COLOURS = { "2xx": "#27ae60", "3xx": "#2980b9", "4xx": "#f39c12", "5xx": "#c0392b" };

const state = {
  points: new Map(), // second -> point, the last hour
  dynos: [],
  charts: {}, // name -> uPlot
  memoryKeys: "", // the dynos the memory chart was made for
  window: 300,
};
window.dynosim = state; // the browser tests read the charts' data from here

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function bytes(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "kB", "MB", "GB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

function when(unix) {
  return new Date(unix * 1000).toLocaleTimeString();
}

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const response = await fetch(path, options);
  const data = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function said(text, failed = false) {
  const node = document.getElementById("action-result");
  node.textContent = text;
  node.className = failed ? "failed" : "";
}

async function act(what, path, body) {
  said(`${what}…`);
  try {
    await api(path, body);
    said(`${what}: done`);
  } catch (error) {
    said(`${what}: ${error.message}`, true);
  }
}

// -- the formation ------------------------------------------------------------------------------------

function renderFormation(dynos, maintenance) {
  state.dynos = dynos;
  document.getElementById("maintenance").checked = maintenance;
  const now = Date.now() / 1000;
  fill(document.querySelector("#formation tbody"), dynos.map((d) => el("tr", { dataset: { dyno: d.name, state: d.state } },
    el("td", {}, el("a", { href: "#", class: "dyno-link", onclick: (e) => { e.preventDefault(); showDyno(d.name); } }, d.name)),
    el("td", { class: `state state-${d.state}` }, d.state),
    el("td", {}, d.state === "up" && d.since ? duration(now - d.since) : "-"),
    el("td", {}, d.size),
    el("td", {}, d.sandbox || "-"),
    el("td", {}, d.last_exit ? `status ${d.last_exit.status}, ${when(d.last_exit.at)}` : "-"),
    el("td", { class: "command" }, d.command),
    el("td", {}, ["run", "release"].includes(d.type) || d.name.startsWith("scheduler.") ? "" :
      el("button", { dataset: { restart: d.name }, onclick: () => act(`restart ${d.name}`, "/api/restart", { target: d.name }) }, "restart")),
  )));
  const types = new Map();
  for (const d of dynos) {
    if (["run", "release"].includes(d.type) || d.name.startsWith("scheduler.")) continue;
    types.set(d.type, (types.get(d.type) || 0) + 1);
  }
  const holder = document.getElementById("types");
  const focused = document.activeElement && document.activeElement.dataset.scale;
  if (focused) return; // the user is typing a quantity: the tick does not overwrite it
  holder.replaceChildren(...[...types].map(([type, count]) => el("span", { class: "type" },
    el("strong", {}, type), " ",
    el("button", { dataset: { restart: type }, onclick: () => act(`restart ${type}`, "/api/restart", { target: type }) }, `restart all ${type}`),
    " scale to ",
    el("input", { type: "number", min: "0", value: String(count), dataset: { scale: type }, size: "3" }),
    el("button", { dataset: { scaleApply: type }, onclick: () => {
      const quantity = Number(holder.querySelector(`input[data-scale="${type}"]`).value);
      act(`ps:scale ${type}=${quantity}`, "/api/scale", { counts: { [type]: quantity } });
    } }, "scale"),
  )));
}

async function showDyno(name) {
  const dialog = document.getElementById("dyno-detail");
  try {
    const detail = await api(`/api/dynos/${encodeURIComponent(name)}`);
    document.getElementById("dyno-detail-name").textContent = `${name}: ${detail.dyno.state}`;
    document.getElementById("dyno-detail-pending").replaceChildren(...(detail.pending.length ? detail.pending.map(
      (loss) => el("li", {}, `${loss.path} (${loss.label}, ${bytes(loss.size)}): ${loss.fix}`)) : [el("li", {}, "nothing")]));
    document.getElementById("dyno-detail-logs").textContent = detail.logs.join("\n");
    dialog.showModal();
  } catch (error) {
    said(`${name}: ${error.message}`, true);
  }
}

// -- metrics --------------------------------------------------------------------------------------------

function addPoints(points) {
  for (const point of points) state.points.set(point.time, point);
  const oldest = Date.now() / 1000 - RING_SECONDS;
  for (const second of state.points.keys()) {
    if (second >= oldest) break;
    state.points.delete(second);
  }
  const events = document.getElementById("events");
  for (const point of points) {
    for (const event of point.events) {
      events.prepend(el("li", { class: `event event-${event.kind}` }, `${when(point.time)} ${event.dyno} ${event.kind}: ${event.text}`));
    }
  }
  while (events.children.length > 200) events.lastChild.remove();
}

// the events as vertical markers on every chart, through uPlot's draw hook
function eventMarkers() {
  return {
    hooks: {
      draw: [(u) => {
        const { ctx } = u;
        const { top, height } = u.bbox;
        ctx.save();
        ctx.lineWidth = 1.5 * devicePixelRatio;
        ctx.font = `${10 * devicePixelRatio}px sans-serif`;
        for (const [second, point] of state.points) {
          if (!point.events.length) continue;
          const x = u.valToPos(second, "x", true);
          if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
          const kind = point.events[0].kind;
          ctx.strokeStyle = EVENT_COLOURS[kind] || (kind.startsWith("H") ? "#c0392b" : "#555");
          ctx.fillStyle = ctx.strokeStyle;
          ctx.beginPath();
          ctx.moveTo(x, top);
          ctx.lineTo(x, top + height);
          ctx.stroke();
          ctx.fillText(point.events.map((e) => e.kind).join(","), x + 3, top + 12 * devicePixelRatio);
        }
        ctx.restore();
      }],
    },
  };
}

function chartWidth() {
  return Math.max(400, document.getElementById("metrics-panel").clientWidth - 20);
}

function chartOptions(series, unit) {
  return {
    width: chartWidth(),
    height: 180,
    cursor: { sync: { key: "dynosim" } }, // one time axis: the cursor moves on every chart at once
    scales: { x: { time: true } },
    axes: [{}, { label: unit, size: 60 }],
    series: [{}, ...series],
    plugins: [eventMarkers()],
  };
}

function makeChart(name, series, unit) {
  if (state.charts[name]) state.charts[name].destroy();
  const holder = document.getElementById(`chart-${name}`);
  holder.replaceChildren();
  state.charts[name] = new uPlot(chartOptions(series, unit), [[], ...series.map(() => [])], holder);
}

function memoryDynos() {
  const names = new Set();
  for (const point of state.points.values()) for (const name of Object.keys(point.memory)) names.add(name);
  return [...names].sort();
}

const PALETTE = ["#2980b9", "#27ae60", "#8e44ad", "#d35400", "#16a085", "#c0392b", "#2c3e50", "#f39c12", "#7f8c8d", "#e84393"];

function ensureCharts() {
  const dynos = memoryDynos();
  const key = dynos.join(",");
  if (key !== state.memoryKeys || !state.charts.memory) {
    state.memoryKeys = key;
    const series = [];
    dynos.forEach((name, i) => {
      series.push({ label: `${name} RSS`, stroke: PALETTE[i % PALETTE.length], width: 1.5 });
      series.push({ label: `${name} swap`, stroke: PALETTE[i % PALETTE.length], dash: [4, 4], width: 1 });
    });
    series.push({ label: "quota", stroke: "#c0392b", dash: [10, 5], width: 1.5 });
    makeChart("memory", series, "MB");
  }
  if (!state.charts.response) {
    makeChart("response", [
      { label: "median", stroke: "#27ae60", width: 1.5 },
      { label: "p95", stroke: "#f39c12", width: 1.5 },
      { label: "p99", stroke: "#c0392b", width: 1.5 },
    ], "ms");
  }
  if (!state.charts.throughput) {
    makeChart("throughput", Object.entries(STATUS_COLOURS).map(([label, stroke]) => ({
      label, stroke, width: 1.5, paths: uPlot.paths.stepped({ align: 1 }),
    })), "req/s");
  }
}

function redraw() {
  ensureCharts();
  const max = Math.floor(Date.now() / 1000);
  // the window, or since the first second there is when the run is younger than it
  const first = state.points.size ? state.points.keys().next().value : max;
  const min = Math.max(max - state.window, Math.min(first, max - 60) - 5);
  const seconds = [...state.points.keys()].filter((s) => s >= min);
  const points = seconds.map((s) => state.points.get(s));
  const dynos = state.memoryKeys ? state.memoryKeys.split(",") : [];
  const memory = [seconds];
  for (const name of dynos) {
    memory.push(points.map((p) => (p.memory[name] ? p.memory[name].rss_mb : null)));
    memory.push(points.map((p) => (p.memory[name] ? p.memory[name].swap_mb : null)));
  }
  memory.push(points.map((p) => {
    const quotas = Object.values(p.memory).map((m) => m.quota_mb);
    return quotas.length ? Math.max(...quotas) : null;
  }));
  const response = [seconds, ...["p50", "p95", "p99"].map((q) => points.map((p) => (p.response_ms ? p.response_ms[q] : null)))];
  const throughput = [seconds, ...Object.keys(STATUS_COLOURS).map((c) => points.map((p) => p.requests[c]))];
  for (const [name, data] of [["memory", memory], ["response", response], ["throughput", throughput]]) {
    const chart = state.charts[name];
    chart.batch(() => {
      chart.setData(data, false);
      chart.setScale("x", { min, max });
    });
  }
}

// -- the ledger, releases, config, add-ons -------------------------------------------------------------

function lossRow(loss, withTime) {
  return el("tr", { dataset: { path: loss.path, dyno: loss.dyno } },
    ...(withTime ? [el("td", {}, when(loss.time))] : []),
    el("td", {}, loss.dyno), el("td", { class: "path" }, loss.path), el("td", {}, loss.label),
    el("td", {}, bytes(loss.size)), el("td", { class: "fix" }, loss.fix));
}

async function refreshLedger() {
  const ledger = await api("/api/ledger");
  const pending = ledger.pending.filter((loss) => loss.kind !== "scratch");
  fill(document.querySelector("#ledger-pending tbody"), pending.length ? pending.map((loss) => lossRow(loss, false))
    : [el("tr", {}, el("td", { colspan: "5" }, "nothing: every dyno's writes since boot are in /tmp or ignored"))]);
  document.getElementById("ledger-writes-count").textContent = String(ledger.writes_total);
  fill(document.querySelector("#ledger-writes tbody"), [...ledger.writes].reverse().slice(0, 100).map((w) => el("tr", {},
    el("td", {}, when(w.time)), el("td", {}, w.dyno), el("td", { class: "path" }, w.path), el("td", {}, w.action))));
  const history = [...ledger.losses].reverse();
  fill(document.querySelector("#ledger-history tbody"), history.length ? history.map((loss) => lossRow(loss, true))
    : [el("tr", {}, el("td", { colspan: "6" }, "no restart has discarded a file yet"))]);
}

async function refreshReleases() {
  const releases = await api("/api/releases");
  fill(document.querySelector("#releases tbody"), releases.map((r) => el("tr", { class: r.current ? "current" : "" },
    el("td", {}, `v${r.version}`), el("td", {}, r.description), el("td", {}, r.user),
    el("td", {}, new Date(r.created_at * 1000).toLocaleString()), el("td", {}, r.current ? `${r.status} (current)` : r.status))));
}

async function refreshConfig() {
  const config = await api("/api/config");
  fill(document.querySelector("#config tbody"), config.names.map((name) => {
    const value = el("td", { class: "value", dataset: { configVar: name } }, "••••••");
    const reveal = el("button", { dataset: { reveal: name }, onclick: async () => {
      const shown = await api(`/api/config?reveal=${encodeURIComponent(name)}`);
      value.textContent = shown.value;
      reveal.remove();
    } }, "reveal");
    return el("tr", {}, el("th", {}, name), value, el("td", {}, reveal));
  }));
}

async function refreshAddons() {
  const addons = await api("/api/addons");
  fill(document.querySelector("#addons tbody"), addons.length ? addons.map((a) => el("tr", {},
    el("td", {}, a.name ? `${a.addon} (${a.name})` : a.addon), el("td", {}, a.plan || "-"), el("td", {}, a.service),
    el("td", {}, a.backend || "(next run)"), el("td", {}, a.endpoint || "-"),
    el("td", {}, `${a.attached_as}: ${a.config_vars.join(", ")}`), el("td", {}, bytes(a.size))))
    : [el("tr", {}, el("td", { colspan: "7" }, "no add-ons"))]);
}

function refreshSlow() {
  return Promise.all([refreshReleases(), refreshConfig(), refreshAddons()]).catch((error) => said(error.message, true));
}

// -- live --------------------------------------------------------------------------------------------------

const CHANGES = new Set(["deploy", "release", "rollback", "config", "scale"]);

function connectLive(since) {
  const live = new EventSource(`/api/live${since ? `?since=${since}` : ""}`);
  const connection = document.getElementById("connection");
  live.onopen = () => { connection.textContent = "live"; connection.className = "live"; };
  live.onerror = () => { connection.textContent = "reconnecting…"; connection.className = "down"; };
  live.onmessage = (message) => {
    const tick = JSON.parse(message.data);
    renderFormation(tick.dynos, tick.maintenance);
    addPoints(tick.points);
    if (tick.points.some((p) => p.events.some((e) => CHANGES.has(e.kind)))) refreshSlow();
    redraw();
  };
}

let logStream = null;

function connectLogs() {
  if (logStream) logStream.close();
  const params = new URLSearchParams();
  const source = document.getElementById("log-source").value;
  const dyno = document.getElementById("log-dyno").value.trim();
  if (source) params.set("source", source);
  if (dyno) params.set("dyno", dyno);
  const pre = document.getElementById("logs");
  pre.textContent = "";
  logStream = new EventSource(`/api/logs?${params}`);
  logStream.onmessage = (message) => {
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.append(JSON.parse(message.data) + "\n");
    while (pre.childNodes.length > KEEP_LOG_LINES) pre.firstChild.remove();
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  };
}

async function start() {
  document.getElementById("maintenance").addEventListener("change", (event) => {
    const on = event.target.checked;
    act(`maintenance:${on ? "on" : "off"}`, "/api/maintenance", { on });
  });
  document.getElementById("window").addEventListener("change", (event) => {
    state.window = Number(event.target.value);
    redraw();
  });
  document.getElementById("log-source").addEventListener("change", connectLogs);
  document.getElementById("log-dyno").addEventListener("change", connectLogs);
  window.addEventListener("resize", () => {
    for (const chart of Object.values(state.charts)) chart.setSize({ width: chartWidth(), height: 180 });
  });
  let since = null;
  try {
    const series = await api(`/api/metrics?window=${RING_SECONDS}`);
    addPoints(series.points);
    since = series.points.length ? series.points[series.points.length - 1].time + 1 : null;
  } catch (error) {
    document.getElementById("metrics-off").hidden = false;
  }
  redraw();
  connectLive(since);
  connectLogs();
  refreshSlow();
  refreshLedger().catch((error) => said(error.message, true));
  setInterval(() => refreshLedger().catch(() => {}), 2000);
}

start();
