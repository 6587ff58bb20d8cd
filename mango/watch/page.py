"""The live page: one HTML document with its own small SVG charts (no CDN, no internet needed).

It opens ``events`` (server-sent events; each message is the folder state of
:meth:`mango.watch.reader.FolderWatcher.state` as JSON) and redraws on every message; the
browser's ``EventSource`` reconnects by itself when the server restarts.
"""
from __future__ import annotations

__all__ = ["PAGE"]

PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>MANGO watch</title>
<style>
  :root { --fg:#1d232a; --muted:#66707a; --line:#d8dde2; --bg:#f6f7f9; --card:#fff; --acc:#d9480f;
          --base:#868e96; --ok:#2b8a3e; --warn:#e67700; --bad:#c92a2a; --run:#1971c2; }
  * { box-sizing: border-box; }
  body { margin:0; font:14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color:var(--fg); background:var(--bg); }
  header { display:flex; gap:12px; align-items:baseline; padding:10px 18px; background:#fff; border-bottom:1px solid var(--line); flex-wrap:wrap; }
  header h1 { font-size:17px; margin:0; }
  header .folder { color:var(--muted); font-family:ui-monospace, monospace; font-size:12px; overflow-wrap:anywhere; }
  #conn { margin-left:auto; font-size:12px; color:var(--muted); }
  #conn.live::before { content:"\25CF "; color:var(--ok); }
  #conn.down::before { content:"\25CF "; color:var(--bad); }
  main { padding:14px 18px; display:grid; gap:14px; }
  .row { display:grid; gap:14px; grid-template-columns: 300px 1fr; align-items:start; }
  @media (max-width: 900px) { .row { grid-template-columns: 1fr; } }
  .card { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:12px 14px; }
  .card h2 { font-size:13px; margin:0 0 8px; color:var(--muted); font-weight:600; text-transform:uppercase; letter-spacing:.04em; }
  .big { font-size:30px; font-weight:650; font-variant-numeric: tabular-nums; }
  .sub { color:var(--muted); font-size:12px; }
  .kv { display:grid; grid-template-columns:112px minmax(0, 1fr); gap:3px 12px; font-variant-numeric: tabular-nums; }
  .kv dt { color:var(--muted); } .kv dd { margin:0; overflow-wrap:anywhere; }
  .badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; font-weight:600; color:#fff; background:var(--muted); }
  .s-running { background:var(--run); } .s-finished { background:var(--ok); } .s-failed { background:var(--bad); }
  .s-stalled { background:var(--warn); } .s-pending { background:var(--base); } .s-interrupted { background:var(--warn); }
  #best-image { width:100%; max-width:272px; image-rendering: pixelated; border:1px solid var(--line); border-radius:4px; display:block; }
  .noimg { padding:28px 8px; text-align:center; color:var(--muted); border:1px dashed var(--line); border-radius:4px; }
  .progress { height:6px; background:#e9ecef; border-radius:3px; overflow:hidden; margin:6px 0 2px; }
  .progress > div { height:100%; background:var(--run); width:0; transition: width .3s; }
  svg.chart { width:100%; height:300px; display:block; }
  svg.small { height:180px; }
  svg text { font-size:11px; fill:var(--muted); }
  .legend { font-size:12px; color:var(--muted); display:flex; gap:14px; flex-wrap:wrap; margin-top:4px; }
  .legend i { display:inline-block; width:18px; height:0; border-top:2px solid; vertical-align:middle; margin-right:4px; }
  table { border-collapse:collapse; width:100%; font-variant-numeric: tabular-nums; }
  th, td { text-align:left; padding:4px 8px; border-bottom:1px solid var(--line); white-space:nowrap; }
  th { color:var(--muted); font-weight:600; font-size:12px; }
  td img { height:36px; image-rendering: pixelated; vertical-align:middle; }
  .grid-units { display:grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap:14px; }
  .hidden { display:none !important; }
  .bars { display:flex; align-items:flex-end; gap:1px; height:60px; }
  .bars div { flex:1; background:var(--run); min-width:1px; }
  .msg { color:var(--muted); padding:30px; text-align:center; }
  .err { color:var(--bad); }
</style>
</head>
<body>
<header>
  <h1>MANGO watch</h1>
  <span id="kind" class="sub"></span>
  <span id="status" class="badge">…</span>
  <span class="folder" id="folder"></span>
  <span id="conn" class="down">connecting</span>
</header>
<main>
  <div id="message" class="msg hidden"></div>

  <!-- one run (or one rig run) -->
  <section id="run-view" class="hidden">
    <div class="row">
      <div class="card">
        <h2>Best so far</h2>
        <div class="big" id="best-value">–</div>
        <div class="sub" id="best-where"></div>
        <div class="sub" id="reported"></div>
        <div class="sub" id="approach"></div>
        <div class="sub" id="image-source"></div>
        <div style="margin-top:10px" id="image-box">
          <img id="best-image" class="hidden" alt="best image so far" onerror="this.classList.add('hidden');document.getElementById('no-image').classList.remove('hidden')">
          <div id="no-image" class="noimg">no image yet</div>
        </div>
      </div>
      <div class="card">
        <h2 id="curve-title">Best so far vs. random search</h2>
        <svg id="curve" class="chart" data-points="0" data-last-x="0"></svg>
        <div class="legend"><span><i style="border-color:var(--acc)"></i><span id="curve-label">best so far</span></span>
          <span id="batch-legend"><i style="border-color:#74c0fc"></i>batch maximum</span>
          <span id="baseline-legend"><i style="border-color:var(--base);border-top-style:dashed"></i>random search, expected best of n</span></div>
        <div class="sub" id="baseline-source"></div>
      </div>
    </div>
    <div class="row">
      <div class="card">
        <h2>Progress</h2>
        <div class="progress"><div id="progress-bar"></div></div>
        <dl class="kv">
          <dt>queries</dt><dd id="queries">–</dd>
          <dt>per second</dt><dd id="qps">–</dd>
          <dt>ETA</dt><dd id="eta">–</dd>
          <dt>elapsed</dt><dd id="elapsed">–</dd>
          <dt>optimizer share</dt><dd id="opt-share">–</dd>
          <dt>last write</dt><dd id="age">–</dd>
          <dt>objective</dt><dd id="objective">–</dd>
          <dt>optimizer</dt><dd id="optimizer">–</dd>
        </dl>
      </div>
      <div class="card" id="latest-card">
        <h2>Latest batch</h2>
        <div class="sub" id="latest-text"></div>
        <img id="latest-image" class="hidden" alt="latest batch, best first" style="max-width:100%;max-height:420px;image-rendering:pixelated;display:block;margin:6px 0" onerror="this.classList.add('hidden')">
        <div class="bars" id="latest-bars"></div>
      </div>
    </div>
    <div id="rig-view" class="hidden">
      <div class="row">
        <div class="card">
          <h2>Rig health</h2>
          <dl class="kv">
            <dt>blocks answered</dt><dd id="rig-blocks">–</dd>
            <dt>presentations</dt><dd id="rig-pres">–</dd>
            <dt>latency (median / max)</dt><dd id="rig-latency">–</dd>
            <dt>retries</dt><dd id="rig-retries">–</dd>
            <dt>dropped trials</dt><dd id="rig-drops">–</dd>
            <dt>rejected replies</dt><dd id="rig-rejected">–</dd>
            <dt>awaiting reply</dt><dd id="rig-unanswered">–</dd>
            <dt>reference drift / block</dt><dd id="rig-drift">–</dd>
          </dl>
        </div>
        <div class="card">
          <h2>Latency per block (s)</h2>
          <svg id="rig-latency-chart" class="chart small"></svg>
          <h2 style="margin-top:10px">Reference images: mean response per block (drift)</h2>
          <svg id="rig-ref-chart" class="chart small"></svg>
        </div>
      </div>
      <div class="card"><h2>Last blocks</h2><table id="rig-table"></table></div>
    </div>
  </section>

  <!-- many runs (compare, scan, demo) -->
  <section id="multi-view" class="hidden">
    <div class="card">
      <h2 id="multi-title">Runs</h2>
      <div class="progress"><div id="multi-progress"></div></div>
      <div class="sub" id="multi-summary"></div>
    </div>
    <div class="card"><table id="runs-table"></table></div>
    <div class="grid-units" id="unit-charts"></div>
  </section>
</main>
<script>
"use strict";
const params = new URLSearchParams(location.search);
const token = params.get("token");
const withToken = (u) => token ? u + (u.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : u;
const $ = (id) => document.getElementById(id);
const palette = ["#d9480f", "#1971c2", "#2b8a3e", "#9c36b5", "#e67700", "#0c8599", "#c2255c", "#5f3dc4", "#74b816", "#495057"];
let last = null;

function fmt(v, d) {
  if (v === null || v === undefined || !isFinite(v)) return "–";
  d = d || 5;
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
  return Number(v.toPrecision(d)).toString();
}
function fmtTime(s) {
  if (s === null || s === undefined || !isFinite(s)) return "–";
  s = Math.round(s);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}
function el(tag, attrs, text) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}
function ticks(lo, hi, n) {
  if (!(hi > lo)) return [lo];
  const step0 = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(step0)));
  const step = [1, 2, 2.5, 5, 10].map(m => m * mag).find(s => s >= step0) || step0;
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + 1e-9 * step; t += step) out.push(+t.toPrecision(12));
  return out;
}
// series: [{x:[], y:[], color, width, dash, step, opacity}]; main: index of the series the test counts
function drawChart(svg, series, opts) {
  opts = opts || {};
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const W = svg.clientWidth || 600, H = svg.clientHeight || 300;
  svg.setAttribute("viewBox", "0 0 " + W + " " + H);
  const m = {l: 54, r: 22, t: 10, b: 30};
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const s of series) for (let i = 0; i < s.x.length; i++) {
    const x = s.x[i], y = s.y[i];
    if (y === null || !isFinite(y)) continue;
    if (s.xmaxOnly !== true) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); }
    y0 = Math.min(y0, y); y1 = Math.max(y1, y);
  }
  if (opts.xmax) x1 = Math.max(x1, opts.xmax);
  if (opts.xmin !== undefined) x0 = Math.min(x0, opts.xmin);
  if (!isFinite(x0)) { svg.appendChild(el("text", {x: W / 2 - 30, y: H / 2}, "no data yet")); return; }
  if (x1 <= x0) x1 = x0 + 1;
  if (y1 <= y0) { y1 = y0 + (Math.abs(y0) || 1) * 0.05; y0 = y0 - (Math.abs(y0) || 1) * 0.05; }
  const pad = (y1 - y0) * 0.06; y0 -= pad; y1 += pad;
  const sx = (x) => m.l + (x - x0) / (x1 - x0) * (W - m.l - m.r);
  const sy = (y) => H - m.b - (y - y0) / (y1 - y0) * (H - m.t - m.b);
  for (const t of ticks(y0, y1, 5)) {
    svg.appendChild(el("line", {x1: m.l, x2: W - m.r, y1: sy(t), y2: sy(t), stroke: "#eef0f2"}));
    svg.appendChild(el("text", {x: m.l - 6, y: sy(t) + 4, "text-anchor": "end"}, fmt(t, 3)));
  }
  for (const t of ticks(x0, x1, 6)) {
    svg.appendChild(el("text", {x: sx(t), y: H - m.b + 16, "text-anchor": "middle"}, fmt(t, 4)));
  }
  svg.appendChild(el("line", {x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b, stroke: "#adb5bd"}));
  svg.appendChild(el("line", {x1: m.l, x2: m.l, y1: m.t, y2: H - m.b, stroke: "#adb5bd"}));
  if (opts.xlabel) svg.appendChild(el("text", {x: W - m.r, y: H - 2, "text-anchor": "end"}, opts.xlabel));
  for (const s of series) {
    const pts = [];
    for (let i = 0; i < s.x.length; i++) {
      const y = s.y[i];
      if (y === null || !isFinite(y)) continue;
      if (s.step && pts.length) pts.push(sx(s.x[i]).toFixed(1) + "," + pts[pts.length - 1].split(",")[1]);
      pts.push(sx(s.x[i]).toFixed(1) + "," + sy(y).toFixed(1));
    }
    if (s.step && s.extendTo !== undefined && pts.length) pts.push(sx(s.extendTo).toFixed(1) + "," + pts[pts.length - 1].split(",")[1]);
    if (s.dots) {
      for (const p of pts) { const [a, b] = p.split(","); svg.appendChild(el("circle", {cx: a, cy: b, r: 1.6, fill: s.color, opacity: s.opacity || 1})); }
      continue;
    }
    const line = el("polyline", {points: pts.join(" "), fill: "none", stroke: s.color, "stroke-width": s.width || 2,
                                 "stroke-dasharray": s.dash || "", opacity: s.opacity || 1});
    if (s.cls) line.setAttribute("class", s.cls);
    svg.appendChild(line);
  }
  if (opts.main !== undefined) {
    const s = series[opts.main];
    svg.setAttribute("data-points", s.x.length);
    svg.setAttribute("data-last-x", s.x.length ? s.x[s.x.length - 1] : 0);
  }
}

function setStatus(st) {
  const b = $("status");
  b.textContent = st || "…";
  b.className = "badge s-" + (st || "pending");
}

function renderRun(s) {
  $("run-view").classList.remove("hidden");
  $("multi-view").classList.add("hidden");
  setStatus(s.status);
  const rig = s.kind === "rig";
  $("best-value").textContent = fmt(s.best, 6);
  const named = s.reported && s.reported.name && s.reported.name !== "value";
  $("best-where").textContent = (named ? "search score (the " + s.reported.name + " is below); " : "") +
      (s.best_query ? ("reached at query " + s.best_query) :
       (s.best_n ? ("mean over " + s.best_n + " presentations") : ""));
  if (s.known_max !== null && s.known_max !== undefined) $("best-where").textContent += " (known maximum " + fmt(s.known_max) + ")";
  const rep = s.reported;
  $("reported").textContent = rep && rep.name && rep.name !== "value" ?
      (rep.as_of != null ?
        (rep.name + ": " + fmt(rep.at_best_score) + " at the best score as of query " + rep.as_of +
         " (best " + rep.name + " " + fmt(rep.best) + " then; the run writes these at most every few seconds)") :
        (rep.name + ": " + fmt(rep.at_best_score) + " at the best score (best " + rep.name + " " + fmt(rep.best) + ")")) : "";
  const near = s.approach;
  $("approach").textContent = near && near.spikes === 0 && typeof near.late_peak === "number" ?
      ("never fired; closest approach: membrane peaked at " + fmt(near.late_peak, 3) +
       " in the second half of T (threshold " + fmt(near.threshold, 3) + ")" +
       (near.position ? (" at position [" + near.position.join(", ") + "]" +
                         (near.map ? " of the " + near.map.join(" x ") + " map" : "")) : "")) : "";
  const img = $("best-image");
  if (s.image) {
    const src = withToken(s.image);
    if (img.getAttribute("src") !== src) img.setAttribute("src", src);
    img.classList.remove("hidden"); $("no-image").classList.add("hidden");
  } else {
    img.classList.add("hidden"); $("no-image").classList.remove("hidden");
  }
  $("image-source").textContent = s.image && s.image_source && s.image_source !== "best.png" ? s.image_source : "";
  const unit = rig ? "presentations" : "queries";
  const series = [];
  const curve = s.curve || {x: [], y: []};
  const end = s.n_queries || (curve.x.length ? curve.x[curve.x.length - 1] : 0);
  if (s.batch_max && !rig) series.push({x: s.batch_max.x, y: s.batch_max.y, color: "#74c0fc", dots: true});
  if (s.baseline) series.push({x: s.baseline.x.filter(x => x <= Math.max(end, 1)), y: s.baseline.y, color: "#868e96", dash: "6 4", width: 1.5, cls: "baseline"});
  series.push({x: curve.x, y: curve.y, color: "#d9480f", step: true, width: 2.5, extendTo: end, cls: "best-curve"});
  drawChart($("curve"), series, {main: series.length - 1, xlabel: unit, xmin: 0});
  $("curve-label").textContent = rig ? "best mean response so far (over each image's presentations)" : "best so far";
  $("curve-title").textContent = rig ? "Best mean response so far" : "Best so far vs. random search";
  $("batch-legend").classList.toggle("hidden", !(s.batch_max && !rig));
  $("baseline-legend").classList.toggle("hidden", !s.baseline);
  $("baseline-source").textContent = s.baseline ? ("Random-search baseline: " + s.baseline.source +
      (s.baseline_now !== undefined && s.baseline_now !== null ? "; expected best at " + end + " queries: " + fmt(s.baseline_now) : "")) :
      (rig ? "" : "Random-search baseline: not available yet (needs a first batch).");
  $("queries").textContent = (s.n_queries || 0) + (s.budget ? " / " + s.budget : "") + " " + unit;
  $("progress-bar").style.width = s.budget ? Math.min(100, 100 * (s.n_queries || 0) / s.budget) + "%" : "0";
  const rate = s.qps_recent || s.qps;
  $("qps").textContent = rate ? fmt(rate, 3) + " " + unit + "/s" : "–";
  $("eta").textContent = s.status === "finished" ? "done" : fmtTime(s.eta_s);
  $("elapsed").textContent = fmtTime(s.elapsed_s);
  $("opt-share").textContent = (s.optimizer_share !== null && s.optimizer_share !== undefined) ?
      fmt(100 * s.optimizer_share, 2) + " % of the run's time" : "– (in result.json when the run writes it)";
  $("objective").textContent = s.objective || "–";
  $("optimizer").textContent = (s.optimizer || "–") + (s.seed !== undefined && s.seed !== null ? ", seed " + s.seed : "");
  const lb = s.latest_batch;
  $("latest-card").classList.toggle("hidden", !lb);
  if (lb) {
    $("latest-text").textContent = "batch " + lb.batch + ": " + lb.size + " queries, max " + fmt(lb.max) + ", mean " + fmt(lb.mean) + (lb.image ? " (images best first)" : "");
    const li = $("latest-image");
    if (lb.image) { const src = withToken(lb.image); if (li.getAttribute("src") !== src) li.setAttribute("src", src); li.classList.remove("hidden"); } else li.classList.add("hidden");
    const bars = $("latest-bars");
    bars.innerHTML = "";
    const vals = (lb.values || []).filter(v => v !== null).slice().sort((a, b) => b - a);
    const hi = Math.max.apply(null, vals.concat([s.best || 0])), lo = Math.min.apply(null, vals.concat([0]));
    for (const v of vals.slice(0, 200)) { const d = document.createElement("div"); d.style.height = (hi > lo ? 4 + 96 * (v - lo) / (hi - lo) : 50) + "%"; d.title = fmt(v); bars.appendChild(d); }
  }
  $("rig-view").classList.toggle("hidden", !rig);
  if (rig) renderRig(s.rig);
}

function renderRig(r) {
  $("rig-blocks").textContent = r.blocks;
  $("rig-pres").textContent = r.presentations;
  $("rig-latency").textContent = fmt(r.latency_median_s, 3) + " s / " + fmt(r.latency_max_s, 3) + " s";
  $("rig-retries").textContent = r.retries + " resends (" + r.retried_blocks + " blocks)";
  $("rig-drops").textContent = r.dropped;
  $("rig-rejected").textContent = r.rejected;
  $("rig-unanswered").textContent = r.sent_unanswered;
  const sl = (r.reference && r.reference.slope_per_block) || [];
  $("rig-drift").textContent = sl.length ? sl.map(v => fmt(v, 3)).join(", ") : "– (no reference images)";
  drawChart($("rig-latency-chart"), [{x: r.latency.x, y: r.latency.y, color: "#1971c2", width: 1.5}], {xlabel: "block"});
  const refs = (r.reference.series || []).map((ys, j) => ({x: r.reference.x, y: ys, color: palette[(j + 1) % palette.length], width: 1.5}));
  drawChart($("rig-ref-chart"), refs, {xlabel: "block"});
  const t = $("rig-table");
  t.innerHTML = "<tr><th>block</th><th>images</th><th>trials</th><th>received</th><th>dropped</th><th>attempt</th><th>rejected</th><th>latency</th><th>best mean</th><th>references</th></tr>";
  for (const b of r.table.slice().reverse()) {
    const tr = document.createElement("tr");
    const cells = [b.block + (b.confirm ? " (confirm)" : ""), b.images, b.expected, b.received === undefined ? "awaiting" : b.received,
                   b.dropped === undefined ? "" : b.dropped, b.attempt === undefined ? "" : b.attempt, b.rejected === undefined ? "" : b.rejected,
                   b.latency_s === undefined ? "" : fmt(b.latency_s, 3) + " s", fmt(b.best_mean), (b.reference_means || []).map(v => fmt(v, 3)).join(", ")];
    for (const c of cells) { const td = document.createElement("td"); td.textContent = c; tr.appendChild(td); }
    t.appendChild(tr);
  }
}

function renderMulti(s) {
  $("multi-view").classList.remove("hidden");
  $("run-view").classList.add("hidden");
  const c = s.counts || {};
  const overall = c.running ? "running" : (c.failed ? "failed" : (c.stalled ? "stalled" : (c.interrupted ? "interrupted" : (c.pending ? "pending" : "finished"))));
  setStatus(overall);
  $("multi-title").textContent = (s.kind === "scan" ? "Layer scan " : s.kind === "compare" ? "Comparison " : "Runs ") + (s.name || "");
  $("multi-progress").style.width = s.queries_total ? (100 * s.queries_done / s.queries_total) + "%" : "0";
  $("multi-summary").textContent = s.runs.length + " runs: " + ["finished", "running", "stalled", "interrupted", "pending", "failed"].filter(k => c[k]).map(k => c[k] + " " + k).join(", ") +
      (s.queries_total ? "; " + s.queries_done + " / " + s.queries_total + " queries" : "") +
      (s.qps ? "; " + fmt(s.qps, 3) + " queries/s" : "") + (s.eta_s ? "; ETA " + fmtTime(s.eta_s) : "");
  const t = $("runs-table");
  t.innerHTML = "<tr><th>unit</th><th>optimizer</th><th>seed</th><th>status</th><th>queries</th><th>best</th><th>q/s</th><th>ETA</th><th>image</th></tr>";
  const optColor = {};
  let ci = 0;
  for (const r of s.runs) { const o = String(r.optimizer); if (!(o in optColor)) optColor[o] = palette[ci++ % palette.length]; }
  for (const r of s.runs) {
    const tr = document.createElement("tr");
    tr.setAttribute("data-status", r.status);
    const cells = [r.unit, r.optimizer, r.seed, null, (r.n_queries || 0) + (r.budget ? " / " + r.budget : ""), fmt(r.best),
                   fmt(r.qps_recent || r.qps, 3), r.status === "running" ? fmtTime(r.eta_s) : "", null];
    cells.forEach((v, i) => {
      const td = document.createElement("td");
      if (i === 3) { const b = document.createElement("span"); b.className = "badge s-" + r.status; b.textContent = r.status; td.appendChild(b); if (r.error) { td.title = r.error; td.appendChild(document.createTextNode(" " + r.error.slice(0, 60))); td.classList.add("err"); } }
      else if (i === 8) { if (r.image) { const im = document.createElement("img"); im.src = withToken(r.image); im.alt = "best"; td.appendChild(im); } }
      else { td.textContent = v === null || v === undefined ? "" : v; if (i === 1) td.style.color = optColor[String(r.optimizer)]; }
      tr.appendChild(td);
    });
    t.appendChild(tr);
  }
  const box = $("unit-charts");
  const units = s.units || [];
  if (box.childElementCount !== units.length) {
    box.innerHTML = "";
    units.forEach((u, i) => {
      const card = document.createElement("div"); card.className = "card";
      const h = document.createElement("h2"); h.textContent = u; card.appendChild(h);
      const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg"); svg.setAttribute("class", "chart small unit-chart"); svg.id = "unit-chart-" + i;
      card.appendChild(svg);
      const lg = document.createElement("div"); lg.className = "legend"; lg.id = "unit-legend-" + i; card.appendChild(lg);
      box.appendChild(card);
    });
  }
  units.forEach((u, i) => {
    const runs = s.runs.filter(r => String(r.unit) === u);
    const series = [];
    const bl = (s.baselines || {})[u];
    const xmax = Math.max.apply(null, runs.map(r => r.budget || r.n_queries || 1).concat([1]));
    if (bl) series.push({x: bl.x, y: bl.y, color: "#868e96", dash: "6 4", width: 1.5});
    for (const r of runs) series.push({x: r.curve.x, y: r.curve.y, color: optColor[String(r.optimizer)], step: true, width: 1.8, extendTo: r.n_queries, opacity: r.status === "finished" ? 0.85 : 1});
    drawChart($("unit-chart-" + i), series, {xlabel: "queries", xmin: 0, xmax: xmax, main: series.length - 1});
    const lg = $("unit-legend-" + i);
    lg.innerHTML = "";
    const seen = new Set();
    for (const r of runs) { const o = String(r.optimizer); if (seen.has(o)) continue; seen.add(o); const sp = document.createElement("span"); sp.innerHTML = "<i style='border-color:" + optColor[o] + "'></i>"; sp.appendChild(document.createTextNode(o)); lg.appendChild(sp); }
    if (bl) { const sp = document.createElement("span"); sp.innerHTML = "<i style='border-color:#868e96;border-top-style:dashed'></i>"; sp.appendChild(document.createTextNode("random search (" + bl.source + ")")); lg.appendChild(sp); }
  });
}

function render(s) {
  last = s;
  $("folder").textContent = s.folder;
  $("kind").textContent = s.kind;
  const msg = $("message");
  if (s.kind === "run" || s.kind === "rig") { msg.classList.add("hidden"); renderRun(s); }
  else if (s.kind === "compare" || s.kind === "scan" || s.kind === "multi") { msg.classList.add("hidden"); renderMulti(s); }
  else {
    $("run-view").classList.add("hidden"); $("multi-view").classList.add("hidden");
    msg.textContent = s.message || "waiting"; msg.classList.remove("hidden"); setStatus("pending");
  }
}

setInterval(() => {
  if (last && last.last_write) $("age").textContent = fmtTime(Date.now() / 1000 - last.last_write) + " ago";
}, 1000);

function connect() {
  const es = new EventSource(withToken("events"));
  es.addEventListener("state", (ev) => { $("conn").textContent = "live"; $("conn").className = "live"; render(JSON.parse(ev.data)); });
  es.onerror = () => { $("conn").textContent = "reconnecting"; $("conn").className = "down"; };
}
window.addEventListener("resize", () => { if (last) render(last); });
connect();
</script>
</body>
</html>
"""
