// Skiff dashboard: a single page over the dashboard's JSON API (api/…),
// redrawn every few seconds. No library, no network beyond this origin.
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
const REFRESH_MS = 3000;
let timer = null;

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
}

function sv(tag, attrs, ...kids) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
}

async function api(path) {
  const r = await fetch("api/" + path, { cache: "no-store" });
  const body = await r.text();
  if (!r.ok) throw new Error(body.trim() || r.statusText);
  return JSON.parse(body);
}

function fmtRate(r) { return r >= 10 ? r.toFixed(0) : r >= 1 ? r.toFixed(1) : r.toFixed(2); }
function fmtPct(f) { return (f * 100).toFixed(f > 0 && f < 0.1 ? 1 : 0) + "%"; }
function fmtMs(ms) { return ms < 0 ? "–" : ms >= 100 ? ms.toFixed(0) + "ms" : ms.toFixed(1) + "ms"; }

function setMain(...kids) {
  const m = document.getElementById("main");
  m.replaceChildren(...kids);
  return m;
}

function showError(where, err) {
  where.replaceChildren(el("p", { class: "error" }, String(err.message || err)));
}

// ---- service graph ----

// layout places nodes in columns by their longest distance from a node
// nobody calls (callers from outside the mesh first).
function layout(g) {
  const layer = new Map(g.nodes.map(n => [n.id, 0]));
  // A service's workloads stand right of it even when no proxy reported
  // the hop (the server had no sidecar in the path): same app, same
  // namespace. Layout only: no edge is drawn for it.
  const links = g.edges.map(e => ({ source: e.source, target: e.target }));
  for (const w of g.nodes) {
    if (w.kind !== "workload" || !w.app) continue;
    const svc = "service:" + w.namespace + "/" + w.app;
    if (layer.has(svc) && !g.edges.some(e => e.source === svc && e.target === w.id)) links.push({ source: svc, target: w.id });
  }
  for (let i = 0; i < g.nodes.length; i++) {
    let moved = false;
    for (const e of links) {
      const want = layer.get(e.source) + 1;
      if (want > layer.get(e.target) && want <= g.nodes.length) { layer.set(e.target, want); moved = true; }
    }
    if (!moved) break;
  }
  const cols = new Map();
  for (const n of g.nodes) {
    const l = layer.get(n.id);
    if (!cols.has(l)) cols.set(l, []);
    cols.get(l).push(n);
  }
  const pos = new Map();
  let rows = 1;
  for (const [l, ns] of cols) {
    ns.sort((a, b) => a.id.localeCompare(b.id));
    ns.forEach((n, i) => pos.set(n.id, { x: 90 + l * 230, y: 60 + i * 100 }));
    rows = Math.max(rows, ns.length);
  }
  return { pos, width: 180 + Math.max(...[0, ...layer.values()]) * 230, height: 60 + rows * 100 };
}

function lockIcon(x, y) {
  return sv("g", { class: "lock", transform: `translate(${x - 6},${y - 22})` },
    sv("path", { d: "M3 7 V4 a3 3 0 0 1 6 0 V7" }),
    sv("rect", { x: 1, y: 7, width: 10, height: 8, rx: 1 }),
    sv("title", {}, "mutual TLS"));
}

function drawGraph(holder, g) {
  if (g.nodes.length === 0) {
    holder.replaceChildren(el("p", { class: "muted" }, "No traffic in the last " + g.window + " yet: send some requests through the mesh."));
    return;
  }
  const { pos, width, height } = layout(g);
  const svg = sv("svg", { viewBox: `0 0 ${width} ${height}`, height: height, id: "graph-svg" });
  const nodesById = new Map(g.nodes.map(n => [n.id, n]));
  for (const e of g.edges) {
    const a = pos.get(e.source), b = pos.get(e.target);
    const x1 = a.x + 22, x2 = b.x - 22, mx = (x1 + x2) / 2, my = (a.y + b.y) / 2;
    const cls = "edge" + (e.red ? " red" : "") + (e.rate <= 0 ? " idle" : "");
    const label = `${fmtRate(e.rate)} rps · ${fmtPct(e.error_rate)} 5xx · p99 ${fmtMs(e.p99_ms)}`;
    const grp = sv("g", { class: cls, "data-source": e.source, "data-target": e.target,
      "data-source-name": nodesById.get(e.source).name, "data-target-name": nodesById.get(e.target).name,
      "data-rate": e.rate, "data-error-rate": e.error_rate, "data-p99": e.p99_ms, "data-mtls": e.mtls, "data-red": e.red },
      sv("path", { class: "line", d: `M${x1},${a.y} C${mx},${a.y} ${mx},${b.y} ${x2},${b.y}`, "marker-end": e.red ? "url(#arrow-red)" : "url(#arrow)" }),
      sv("text", { x: mx, y: my - 6, "text-anchor": "middle" }, label),
      sv("title", {}, `${nodesById.get(e.source).name} → ${nodesById.get(e.target).name}: ${label}${e.mtls ? " · mTLS" : ""}`));
    if (e.mtls) grp.append(lockIcon(mx, my - 6));
    svg.append(grp);
  }
  svg.prepend(sv("defs", {},
    sv("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" },
      sv("path", { d: "M0,0 L10,5 L0,10 z", fill: "#6b8e23" })),
    sv("marker", { id: "arrow-red", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" },
      sv("path", { d: "M0,0 L10,5 L0,10 z", fill: "#d0021b" }))));
  for (const n of g.nodes) {
    const p = pos.get(n.id);
    let shape;
    if (n.kind === "service") shape = sv("polygon", { points: `${p.x},${p.y - 20} ${p.x + 20},${p.y + 15} ${p.x - 20},${p.y + 15}` });
    else if (n.kind === "unknown") shape = sv("rect", { x: p.x - 16, y: p.y - 16, width: 32, height: 32 });
    else shape = sv("circle", { cx: p.x, cy: p.y, r: 18 });
    const grp = sv("g", { class: "node " + n.kind, "data-id": n.id, "data-name": n.name, "data-namespace": n.namespace || "" },
      shape,
      sv("text", { x: p.x, y: p.y + 34 }, n.name),
      sv("text", { x: p.x, y: p.y + 48, class: "muted" }, n.kind === "workload" ? n.namespace : n.kind === "service" ? "svc · " + n.namespace : ""),
      sv("title", {}, `${n.kind} ${n.namespace ? n.namespace + "/" : ""}${n.name}: ${fmtRate(n.rate)} rps in`));
    if (n.kind === "service") grp.addEventListener("click", () => { location.hash = `#/service/${n.namespace}/${n.name}`; });
    svg.append(grp);
  }
  holder.replaceChildren(svg);
}

function graphPage() {
  const holder = el("div", { id: "graph" }, el("p", { class: "muted" }, "Loading the graph…"));
  const at = el("span", { class: "muted", id: "graph-at" });
  setMain(el("h2", {}, "Service graph ", at),
    el("div", { class: "legend muted" }, "Edges: requests per second, share of 5xx answers, p99 latency over the last minute; red above 5% errors; the lock marks mutual TLS. Click a service for its page."),
    holder);
  const tick = async () => {
    try {
      const g = await api("graph");
      drawGraph(holder, g);
      at.textContent = "at " + new Date(g.at).toLocaleTimeString();
      holder.dataset.updated = g.at;
    } catch (err) { showError(holder, err); }
  };
  tick();
  timer = setInterval(tick, REFRESH_MS);
}

// ---- service page ----

function chart(title, points, series) {
  const w = 420, h = 140, pad = 30;
  const t0 = points.length ? new Date(points[0].at).getTime() : 0;
  const t1 = points.length ? new Date(points[points.length - 1].at).getTime() : 1;
  let max = 0;
  for (const s of series) for (const p of points) max = Math.max(max, s.get(p));
  max = max || 1;
  const x = t => pad + (w - 2 * pad) * ((t - t0) / Math.max(1, t1 - t0));
  const y = v => h - pad + -(h - 2 * pad) * (v / max);
  const svg = sv("svg", { width: w, height: h },
    sv("line", { class: "axis", x1: pad, y1: h - pad, x2: w - pad, y2: h - pad }),
    sv("line", { class: "axis", x1: pad, y1: pad, x2: pad, y2: h - pad }),
    sv("text", { x: 2, y: pad }, series[0].fmt(max)),
    sv("text", { x: 2, y: h - pad }, "0"));
  series.forEach((s, i) => {
    let d = "";
    for (const p of points) {
      const v = s.get(p);
      if (v < 0) continue;
      d += (d ? " L" : "M") + x(new Date(p.at).getTime()).toFixed(1) + "," + y(v).toFixed(1);
    }
    if (d) svg.append(sv("path", { class: "s" + i, d }));
    if (points.length === 1 && s.get(points[0]) >= 0) svg.append(sv("circle", { class: "s" + i, cx: x(t0), cy: y(s.get(points[0])), r: 2 }));
    svg.append(sv("text", { x: w - pad - 60 * (series.length - i), y: 12, fill: i ? "#d0021b" : "#1f5fa8" }, s.name));
  });
  const last = points.length ? points[points.length - 1] : null;
  return el("div", { class: "chart" }, el("h3", {}, title + (last ? ": " + series.map(s => s.fmt(s.get(last))).join(" / ") : "")), svg);
}

function configObject(o) {
  const box = el("div", { class: "obj", "data-kind": o.kind, "data-name": o.name },
    el("h4", {}, `${o.kind} ${o.namespace ? o.namespace + "/" : ""}${o.name}`),
    el("div", { class: "muted" }, o.source || ""));
  for (const m of o.messages || []) box.append(el("div", { class: m.level }, m.text));
  if (o.spec) box.append(el("details", {}, el("summary", {}, "spec"), el("pre", {}, JSON.stringify(o.spec, null, 2))));
  return box;
}

function servicePage(ns, name) {
  const charts = el("div", { class: "charts" }, el("p", { class: "muted" }, "Loading…"));
  const cfg = el("div", { id: "service-config" });
  setMain(el("h2", {}, `Service ${name}.${ns}`), el("h3", {}, "Golden signals (last 15 minutes)"), charts,
    el("h3", {}, "Config that applies"), cfg);
  const tick = async () => {
    try {
      const p = await api(`service?namespace=${encodeURIComponent(ns)}&name=${encodeURIComponent(name)}`);
      const pts = (p.signals || []).filter(q => !q.no_data);
      charts.replaceChildren(
        chart("Requests", pts, [{ name: "rps", get: q => q.rate, fmt: v => fmtRate(v) + " rps" }]),
        chart("Errors (5xx)", pts, [{ name: "5xx", get: q => q.error_rate, fmt: fmtPct }]),
        chart("Latency", pts, [{ name: "p50", get: q => q.p50_ms, fmt: fmtMs }, { name: "p99", get: q => q.p99_ms, fmt: fmtMs }]));
      if (p.signals_error) charts.append(el("p", { class: "error" }, p.signals_error));
      cfg.replaceChildren();
      if (p.config_error) cfg.append(el("p", { class: "error" }, p.config_error));
      if (!p.config.length) cfg.append(el("p", { class: "muted" }, "No config names this service."));
      for (const o of p.config) cfg.append(configObject(o));
      for (const m of p.messages || []) cfg.append(el("div", { class: m.level }, m.text));
    } catch (err) { showError(charts, err); }
  };
  tick();
  timer = setInterval(tick, REFRESH_MS * 2);
}

// ---- proxies ----

function typeName(url) {
  const short = { Listener: "LDS", RouteConfiguration: "RDS", Cluster: "CDS", ClusterLoadAssignment: "EDS", Secret: "SDS" };
  const t = url.split(".").pop();
  return short[t] || t;
}

function typeStatus(t) {
  if (t.last_nack) return "NACKED";
  if (t.version_sent && t.nonce_acked === t.nonce_sent) return "SYNCED";
  if (!t.version_sent) return "NOT SENT";
  return "STALE";
}

function proxiesPage() {
  const holder = el("div", { id: "proxies" }, el("p", { class: "muted" }, "Loading…"));
  setMain(el("h2", {}, "Proxies and their xDS sync state"), holder);
  const tick = async () => {
    try {
      const ps = await api("syncz");
      const types = ["LDS", "RDS", "CDS", "EDS", "SDS"];
      const table = el("table", {}, el("tr", {}, el("th", {}, "proxy"), el("th", {}, "type"), el("th", {}, "connected"), ...types.map(t => el("th", {}, t))));
      for (const p of ps || []) {
        const byType = new Map((p.types || []).map(t => [typeName(t.type_url), t]));
        table.append(el("tr", { "data-proxy": p.proxy_id }, el("td", {}, p.proxy_id), el("td", {}, p.proxy_type), el("td", {}, new Date(p.connected_at).toLocaleTimeString()),
          ...types.map(n => {
            const t = byType.get(n);
            if (!t) return el("td", { class: "muted" }, "–");
            const st = typeStatus(t);
            const td = el("td", { class: "status-" + st, title: t.last_nack || `sent ${t.version_sent}, acked ${t.version_acked}` }, st);
            if (t.last_nack) td.append(el("div", { class: "error" }, t.last_nack));
            return td;
          })));
      }
      holder.replaceChildren(ps && ps.length ? table : el("p", { class: "muted" }, "No proxy is connected to skiffd."));
    } catch (err) { showError(holder, err); }
  };
  tick();
  timer = setInterval(tick, REFRESH_MS);
}

// ---- config ----

async function configPage() {
  const holder = el("div", {}, el("p", { class: "muted" }, "Loading…"));
  setMain(el("h2", {}, "Config"), holder);
  try {
    const v = await api("config");
    holder.replaceChildren(el("p", { class: "muted" }, `store version ${v.version}`));
    for (const m of v.messages || []) holder.append(el("div", { class: m.level }, m.text));
    for (const o of v.objects) if (o.kind !== "Service") holder.append(configObject(o));
  } catch (err) { showError(holder, err); }
}

// ---- routing ----

function route() {
  if (timer) { clearInterval(timer); timer = null; }
  const h = location.hash.replace(/^#\/?/, "");
  const parts = h.split("/").map(decodeURIComponent);
  for (const a of document.querySelectorAll("header nav a")) a.classList.remove("active");
  if (parts[0] === "service" && parts.length >= 3) { servicePage(parts[1], parts[2]); return; }
  if (parts[0] === "proxies") { document.getElementById("nav-proxies").classList.add("active"); proxiesPage(); return; }
  if (parts[0] === "config") { document.getElementById("nav-config").classList.add("active"); configPage(); return; }
  document.getElementById("nav-graph").classList.add("active");
  graphPage();
}

window.addEventListener("hashchange", route);
api("source").then(s => {
  let t = "metrics from " + s.source;
  const errs = Object.entries(s.scrape_errors || {});
  if (errs.length) t += ` (${errs.length} failed scrapes)`;
  document.getElementById("source").textContent = t;
}).catch(() => {});
route();
