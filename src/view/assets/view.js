// beamwatch live view. Data arrive as server-sent events (api/events): the whole state first,
// then only what changed. Everything is drawn here from those numbers; the server sends the frame
// itself once per frame as a grey PNG. `window.bw` exposes counters for tests and benchmarks.
"use strict";
(() => {
  const bw = (window.bw = {
    events: 0, frames: 0, framesDrawn: 0, overlayPatches: 0, curvePoints: 0, doseMapPatches: 0,
    alarms: 0, alarmLatencyMs: [], imageFrame: null, connected: false,
  });
  const $ = (id) => document.getElementById(id);
  const SIDE = 512;
  let meta = {};
  let status = {};
  let seriesList = [];
  let current = null; // detail of the shown series
  let follow = true; // show the newest series as it arrives
  let img = null;
  let plot = null;
  let plotKind = null;

  // ---- formatting ----------------------------------------------------------------------------
  function fmt(v, digits = 4) {
    if (v === null || v === undefined || !isFinite(v)) return "—";
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
    return String(Number(v.toPrecision(digits)));
  }
  function niceStep(range, n) {
    const raw = range / Math.max(1, n);
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    const m = raw / p;
    return (m < 1.5 ? 1 : m < 3 ? 2 : m < 7 ? 5 : 10) * p;
  }
  function ticks(lo, hi, n) {
    if (!(hi > lo)) return [lo];
    const step = niceStep(hi - lo, n);
    const out = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Number(t.toPrecision(12)));
    return out;
  }
  function niceCeil(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }
  const VIR = [[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
    [31, 158, 137], [53, 183, 121], [110, 206, 88], [181, 222, 43], [253, 231, 37]];
  function viridis(t) {
    t = Math.min(1, Math.max(0, t));
    const x = t * (VIR.length - 1);
    const i = Math.min(VIR.length - 2, Math.floor(x));
    const f = x - i;
    return [0, 1, 2].map((k) => Math.round(VIR[i][k] + (VIR[i + 1][k] - VIR[i][k]) * f));
  }
  const rgba = (c, a) => `rgba(${c[0]},${c[1]},${c[2]},${a})`;
  const doseKnown = () => !!(current && current.timeline.some((p) => p.dose !== null));

  // ---- state and events ----------------------------------------------------------------------
  function emptySeries(b) {
    return { n: b.n, id: b.id, started: b.started, grid: null, pixel_size_a: null, timeline: [], latest: null,
      thresholds: null, crossings: [], alarms: [], fit: { fit: null, note: "not determined yet" }, ended: null,
      image_frame: null };
  }
  function show(detail) {
    current = detail;
    img = null;
    bw.imageFrame = null;
    if (current && current.image_frame !== null && current.image_frame !== undefined) loadImage(current.n, current.image_frame);
    renderSelect();
    renderAlarms();
    draw();
  }
  function applyState(st) {
    meta = st.meta;
    status = st.status;
    seriesList = st.series;
    renderMeta();
    renderStatus();
    if (follow || !current || !seriesList.some((s) => s.n === current.n)) {
      follow = true;
      show(st.current);
      // A late browser sees the newest alarm at once.
      const last = st.current && st.current.alarms.length ? st.current.alarms[st.current.alarms.length - 1] : null;
      if (last) showBanner(last);
    } else {
      fetch(`api/series/${current.n}`).then((r) => (r.ok ? r.json() : null)).then((d) => d && show(d));
    }
  }
  function onSeries(b) {
    seriesList.push(b);
    while (seriesList.length > 32) seriesList.shift();
    if (follow) show(emptySeries(b));
    else renderSelect();
  }
  function onFrame(ev) {
    bw.frames++;
    const b = seriesList.find((s) => s.n === ev.series);
    if (b) b.frames = ev.point.frame;
    if (!current || ev.series !== current.n) return;
    if (ev.grid) {
      current.grid = ev.grid;
      current.pixel_size_a = ev.pixel_size_a;
      current.crossings = new Array(ev.grid.rows * ev.grid.cols).fill(null);
    }
    if (ev.thresholds !== undefined) current.thresholds = ev.thresholds;
    const tl = current.timeline;
    if (!tl.length || tl[tl.length - 1].frame < ev.point.frame) tl.push(ev.point);
    current.latest = ev.latest;
    for (const [p, frame, dose] of ev.crossed) if (!current.crossings[p]) current.crossings[p] = { frame, dose };
    draw();
  }
  function loadImage(n, frame) {
    const im = new Image();
    im.onload = () => {
      if (current && current.n === n) {
        img = im;
        bw.imageFrame = frame;
        draw();
      }
    };
    im.src = `api/image/${n}?f=${frame}`;
  }
  function onAlarm(a) {
    bw.alarms++;
    if (a.view_unix_ms) bw.alarmLatencyMs.push(Date.now() - a.view_unix_ms);
    const b = seriesList.find((s) => s.n === a.series_n);
    if (b) b.alarms++;
    if (current && a.series_n === current.n) current.alarms.push(a);
    showBanner(a);
    renderAlarms();
    draw();
  }
  function onSeriesEnd(ev) {
    const b = seriesList.find((s) => s.n === ev.series);
    if (b) b.ended = true;
    if (current && current.n === ev.series) {
      current.ended = ev.ended;
      current.fit = ev.fit;
      draw();
    }
    renderSelect();
  }

  function connect() {
    const es = new EventSource("api/events");
    const on = (name, f) => es.addEventListener(name, (e) => { bw.events++; f(JSON.parse(e.data)); });
    on("state", applyState);
    on("series", onSeries);
    on("frame", onFrame);
    on("image", (ev) => { if (current && ev.series === current.n) loadImage(ev.series, ev.frame); });
    on("fit", (ev) => { if (current && ev.series === current.n) { current.fit = ev.fit; draw(); } });
    on("alarm", onAlarm);
    on("cleared", () => {});
    on("series_end", onSeriesEnd);
    on("status", (s) => { status = s; renderStatus(); });
    es.onopen = () => { bw.connected = true; setConn(); };
    es.onerror = () => { bw.connected = false; setConn(); };
  }
  function setConn() {
    const c = $("conn");
    if (meta.live === false) { c.textContent = "recorded session"; c.className = "pill"; return; }
    c.textContent = bw.connected ? "live" : "reconnecting…";
    c.className = "pill " + (bw.connected ? "ok" : "bad");
  }

  // ---- header, selector, status, alarms ------------------------------------------------------
  function renderMeta() {
    $("source").textContent = meta.source || "";
    $("metric").textContent = `metric ${meta.metric || "?"} · ${meta.backend || ""}`;
    $("metric").title = meta.metric_choice || "";
    const w = $("warning");
    w.hidden = !meta.warning;
    w.textContent = meta.warning ? meta.warning.toUpperCase() + " — not the paper's metric" : "";
    setConn();
  }
  function renderSelect() {
    const sel = $("series-select");
    sel.textContent = "";
    for (const s of seriesList) {
      const o = document.createElement("option");
      o.value = s.n;
      o.textContent = `${s.id}${s.frames !== null && s.frames !== undefined ? ` (to frame ${s.frames})` : ""}${s.alarms ? ` · ${s.alarms} alarms` : ""}${s.ended ? "" : " · open"}`;
      if (current && s.n === current.n) o.selected = true;
      sel.appendChild(o);
    }
  }
  $("series-select").addEventListener("change", (e) => {
    const n = Number(e.target.value);
    const newest = seriesList.length ? seriesList[seriesList.length - 1].n : null;
    follow = n === newest;
    fetch(`api/series/${n}`).then((r) => (r.ok ? r.json() : null)).then((d) => d && show(d));
  });
  function row(table, k, v, cls) {
    const tr = table.insertRow();
    tr.insertCell().textContent = k;
    const td = tr.insertCell();
    td.textContent = v;
    if (cls) td.className = cls;
  }
  function renderStatus() {
    const t = $("status");
    t.textContent = "";
    const s = status;
    const shift = current && current.latest && current.latest.shift;
    row(t, "cumulative dose", s.cumulative_dose_e_per_a2 !== null && s.cumulative_dose_e_per_a2 !== undefined ? `${fmt(s.cumulative_dose_e_per_a2)} e⁻/Å²` : "unknown (no beam current / dwell / pixel size)");
    row(t, "dose rate", s.dose_rate_e_per_a2_s !== null && s.dose_rate_e_per_a2_s !== undefined ? `${fmt(s.dose_rate_e_per_a2_s, 3)} e⁻/Å²/s` : "—");
    row(t, "frame rate", s.frame_rate_hz !== null && s.frame_rate_hz !== undefined ? `${fmt(s.frame_rate_hz, 3)} frames/s` : "—");
    row(t, "frames received / analysed", `${s.frames_received ?? 0} / ${s.frames_analysed ?? 0}`);
    row(t, "skipped / rejected", `${s.frames_skipped ?? 0} / ${s.frames_rejected ?? 0}`);
    row(t, "not registered / without patches", `${s.frames_not_registered ?? 0} / ${s.frames_without_patches ?? 0}`);
    row(t, "drift (latest)", shift ? `(${fmt(shift.dx_px, 3)}, ${fmt(shift.dy_px, 3)}) px` : "—");
    row(t, "metric", meta.metric_choice || meta.metric || "—");
    row(t, "weights", meta.weights || "none (classical metric)", meta.warning ? "stopped" : "");
    row(t, "backend", meta.backend || "—");
    row(t, "recording", s.recorder || "off", s.recorder_stopped ? "stopped" : "");
    row(t, "memory (RSS)", s.rss_mib ? `${fmt(s.rss_mib, 3)} MiB` : "—");
    row(t, "viewers", `${s.clients ?? 0}`);
  }
  function alarmText(a) {
    const dose = a.cumulative_dose_e_per_a2 !== null && a.cumulative_dose_e_per_a2 !== undefined ? `, ${fmt(a.cumulative_dose_e_per_a2)} e⁻/Å²` : "";
    return `${a.level.toUpperCase()} — ${a.rule}: ${a.message} (series ${a.series}, frame ${a.frame}${dose})`;
  }
  function showBanner(a) {
    const b = $("banner");
    b.hidden = false;
    b.className = a.level === "critical" ? "critical-level" : "warning-level";
    $("banner-text").textContent = alarmText(a);
  }
  $("banner-hide").addEventListener("click", () => { $("banner").hidden = true; });
  function renderAlarms() {
    const body = $("alarms").tBodies[0];
    body.textContent = "";
    if (!current) return;
    for (const a of current.alarms.slice().reverse()) {
      const tr = body.insertRow();
      tr.className = a.level;
      for (const v of [String(a.time || "").replace("T", " ").slice(0, 19), a.level, a.rule, a.frame,
        fmt(a.cumulative_dose_e_per_a2), `${fmt(a.value, 3)} / ${fmt(a.threshold, 3)}`, a.message]) {
        tr.insertCell().textContent = v;
      }
    }
  }

  // ---- pictures ------------------------------------------------------------------------------
  let drawQueued = false;
  function draw() {
    if (drawQueued) return;
    drawQueued = true;
    // Coalesced: a burst of events draws once.
    setTimeout(() => { drawQueued = false; drawFrame(); drawCurve(); drawDoseMap(); renderStatus(); renderSelect(); }, 30);
  }
  function geometry(canvas) {
    const g = current && current.grid;
    if (!g) return null;
    const k = SIDE / Math.max(g.width_px, g.height_px);
    canvas.width = Math.round(g.width_px * k);
    canvas.height = Math.round(g.height_px * k);
    return { g, k };
  }
  function background(ctx, canvas) {
    ctx.fillStyle = "#222";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    if (img) ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
  }
  function scaleBar(ctx, canvas, g, k) {
    const a = current.pixel_size_a;
    if (!a) return;
    const widthNm = (g.width_px * a) / 10;
    let len = Math.pow(10, Math.floor(Math.log10(widthNm / 4)));
    for (const m of [5, 2]) if (len * m <= widthNm / 4) { len *= m; break; }
    const px = ((len * 10) / a) * k;
    const x = 14, y = canvas.height - 16;
    ctx.fillStyle = "rgba(0,0,0,0.55)";
    ctx.fillRect(x - 6, y - 22, px + 12, 32);
    ctx.fillStyle = "#fff";
    ctx.fillRect(x, y, px, 5);
    ctx.font = "bold 13px DejaVu Sans, sans-serif";
    ctx.fillText(`${fmt(len, 3)} nm`, x, y - 6);
  }
  function hatch(ctx, x, y, w, h) {
    ctx.save();
    ctx.beginPath();
    ctx.rect(x, y, w, h);
    ctx.clip();
    ctx.strokeStyle = "rgba(200,200,200,0.7)";
    ctx.lineWidth = 1;
    for (let d = -h; d < w; d += 5) { ctx.beginPath(); ctx.moveTo(x + d, y + h); ctx.lineTo(x + d + h, y); ctx.stroke(); }
    ctx.restore();
  }
  function overlayRange() {
    const vals = (current.latest ? current.latest.values : []).filter((v) => v !== null);
    const th = (current.thresholds || []).filter((v) => v !== null);
    const sorted = vals.slice().sort((a, b) => a - b);
    const p99 = sorted.length ? sorted[Math.floor(0.99 * (sorted.length - 1))] : 0;
    const medTh = th.length ? th.slice().sort((a, b) => a - b)[Math.floor(th.length / 2)] : null;
    return { vmax: niceCeil(Math.max(p99, medTh ? 2 * medTh : 0, 1e-4)), medTh };
  }
  function colourBar(canvas, lo, hi, colour, label, marks) {
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const x0 = 10, x1 = canvas.width - 10, w = x1 - x0;
    for (let i = 0; i < w; i++) { ctx.fillStyle = rgba(colour(i / (w - 1)), 1); ctx.fillRect(x0 + i, 2, 1, 12); }
    ctx.fillStyle = "#222";
    ctx.font = "11px DejaVu Sans, sans-serif";
    ctx.textAlign = "center";
    for (const t of ticks(lo, hi, 5)) {
      const x = x0 + ((t - lo) / (hi - lo || 1)) * w;
      ctx.fillRect(x, 14, 1, 4);
      ctx.fillText(fmt(t, 3), Math.min(Math.max(x, x0 + 12), x1 - 12), 28);
    }
    ctx.textAlign = "left";
    ctx.fillText(label, x0, 43);
    for (const m of marks || []) {
      const x = x0 + ((m.v - lo) / (hi - lo || 1)) * w;
      ctx.fillStyle = "#d50000";
      ctx.fillRect(x - 1, 0, 3, 18);
      ctx.textAlign = "center";
      ctx.fillText(m.label, Math.min(Math.max(x, x0 + 70), x1 - 70), 57);
      ctx.fillStyle = "#222";
    }
    ctx.textAlign = "left";
  }
  function drawFrame() {
    const canvas = $("frame");
    const ctx = canvas.getContext("2d");
    const geo = geometry(canvas);
    if (!geo || !current.latest) {
      ctx.fillStyle = "#222";
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      $("frame-title").textContent = current ? "(waiting for the first compared frame)" : "(no series yet)";
      return;
    }
    const { g, k } = geo;
    background(ctx, canvas);
    const { vmax, medTh } = overlayRange();
    const L = current.latest;
    const size = g.patch_px * k;
    let drawn = 0;
    for (let p = 0; p < g.rows * g.cols; p++) {
      const x = (p % g.cols) * size, y = Math.floor(p / g.cols) * size;
      const st = L.status[p], v = L.values[p];
      if (st >= 2) { hatch(ctx, x, y, size, size); continue; }
      if (v === null || v === undefined) continue;
      ctx.fillStyle = rgba(viridis(v / vmax), 0.45);
      ctx.fillRect(x, y, size, size);
      const th = current.thresholds ? current.thresholds[p] : null;
      if (th !== null && th !== undefined && v > th) {
        ctx.strokeStyle = "#ff1744";
        ctx.lineWidth = 2;
        ctx.strokeRect(x + 1, y + 1, size - 2, size - 2);
      }
      drawn++;
    }
    scaleBar(ctx, canvas, g, k);
    bw.overlayPatches = drawn;
    bw.framesDrawn++;
    const dose = L.dose && L.dose.cumulative_e_per_a2;
    $("frame-title").textContent = `series ${current.id}, frame ${L.frame}${dose !== null && dose !== undefined ? `, ${fmt(dose)} e⁻/Å²` : ""}`;
    colourBar($("frame-bar"), 0, vmax, viridis, `patch dissimilarity (${meta.metric || ""})`,
      medTh !== null ? [{ v: Math.min(medTh, vmax), label: `threshold ${fmt(medTh, 3)} (median)` }] : []);
    const s = L.summary;
    $("frame-note").textContent = s
      ? `${s.analysed_patches} patches compared, ${s.excluded_patches} excluded (hatched); red outline: above its own threshold${s.calibrating ? " (threshold still calibrating)" : ""}. ${current.pixel_size_a ? "" : "Pixel size unknown: no scale bar."}`
      : "";
  }
  function fitAt(f, x) {
    return f.noise_floor + f.saturation * (1 - Math.exp(-Math.max(0, x - f.onset_dose_e_per_a2) / f.critical_dose_e_per_a2));
  }
  function drawCurve() {
    const el = $("curve");
    if (!current) { if (plot) { plot.destroy(); plot = null; } return; }
    const byDose = doseKnown();
    const kind = `${current.n}:${byDose}`;
    const xs = [], mean = [], area = [], th = [], fit = [];
    const f = current.fit && current.fit.fit;
    for (const p of current.timeline) {
      const x = byDose ? p.dose : p.frame;
      if (x === null) continue;
      xs.push(x);
      mean.push(p.mean);
      area.push(p.area === null ? null : 100 * p.area);
      th.push(p.threshold);
      fit.push(f && byDose ? fitAt(f, x) : null);
    }
    const data = [xs, mean, area, th, fit];
    if (!plot || plotKind !== kind) {
      if (plot) plot.destroy();
      el.textContent = "";
      const xlabel = byDose ? "cumulative dose (e⁻/Å²)" : "frame (dose unknown)";
      plot = new uPlot({
        width: 540, height: 330,
        scales: { x: { time: false }, area: { range: [0, 100] } },
        axes: [
          { label: xlabel },
          { label: `mean dissimilarity (${meta.metric || ""})`, size: 60 },
          { side: 1, scale: "area", label: "damaged area (%)", grid: { show: false } },
        ],
        series: [
          { label: byDose ? "dose (e⁻/Å²)" : "frame" },
          { label: "mean", stroke: "#1565c0", width: 2, points: { size: 4 } },
          { label: "damaged area %", stroke: "#c62828", scale: "area", width: 1.5 },
          { label: "patch threshold (median)", stroke: "#777", dash: [6, 4] },
          { label: "fit", stroke: "#2e7d32", dash: [2, 3], width: 2, points: { show: false } },
        ],
      }, data, el);
      plotKind = kind;
    } else {
      plot.setData(data);
    }
    bw.curvePoints = xs.length;
    let note = "";
    if (f) {
      const s = f.critical_dose_sigma_e_per_a2;
      note = `Critical dose Dc = ${fmt(f.critical_dose_e_per_a2)}${s !== null && s !== undefined ? ` ± ${fmt(s, 2)}` : ""} e⁻/Å² after an incubation dose of ${fmt(f.onset_dose_e_per_a2)} e⁻/Å² (fit of the mean, ${f.points} frames).`;
    } else if (current.fit && current.fit.note) {
      note = `Critical dose ${current.fit.note}.`;
    }
    const fc = current.alarms.filter((a) => a.forecast).slice(-1)[0];
    if (fc && fc.forecast.dose_to_target_e_per_a2 !== null) {
      note += ` Forecast: the mean reaches ${fmt(fc.forecast.target, 3)} after ${fmt(fc.forecast.dose_to_target_e_per_a2)} more e⁻/Å²${fc.forecast.frames_to_target !== null ? ` (≈ ${fmt(fc.forecast.frames_to_target, 3)} frames)` : ""}.`;
    }
    for (const a of current.alarms.slice(-3)) note += ` Alarm ${a.rule} at frame ${a.frame} (value ${fmt(a.value, 3)}, threshold ${fmt(a.threshold, 3)}).`;
    $("fit-note").textContent = note;
  }
  function drawDoseMap() {
    const canvas = $("dosemap");
    const ctx = canvas.getContext("2d");
    const geo = geometry(canvas);
    if (!geo) { ctx.fillStyle = "#222"; ctx.fillRect(0, 0, canvas.width, canvas.height); return; }
    const { g, k } = geo;
    background(ctx, canvas);
    const byDose = doseKnown();
    const key = (c) => (byDose ? c.dose : c.frame);
    const crossed = current.crossings.filter((c) => c && key(c) !== null);
    const vals = crossed.map(key);
    const lo = vals.length ? Math.min(...vals) : 0;
    const hi = vals.length ? Math.max(...vals) : 1;
    const span = hi > lo ? hi - lo : 1;
    const size = g.patch_px * k;
    current.crossings.forEach((c, p) => {
      if (!c || key(c) === null) return;
      ctx.fillStyle = rgba(viridis(1 - (key(c) - lo) / span), 0.6);
      ctx.fillRect((p % g.cols) * size, Math.floor(p / g.cols) * size, size, size);
    });
    scaleBar(ctx, canvas, g, k);
    bw.doseMapPatches = crossed.length;
    colourBar($("dose-bar"), lo, hi > lo ? hi : lo + 1, (t) => viridis(1 - t),
      byDose ? "dose at first crossing (e⁻/Å²) — bright = early" : "frame of first crossing (dose unknown) — bright = early", []);
    $("dosemap-note").textContent = crossed.length
      ? `${crossed.length} of ${g.rows * g.cols} patches have crossed their threshold; earliest at ${fmt(lo)} ${byDose ? "e⁻/Å²" : "(frame)"}.`
      : `No patch has crossed its threshold yet (${g.rows * g.cols} patches).`;
  }

  // ---- hover ---------------------------------------------------------------------------------
  function hover(canvas) {
    canvas.addEventListener("mousemove", (e) => {
      const tip = $("tip");
      if (!current || !current.grid || !current.latest) { tip.hidden = true; return; }
      const g = current.grid;
      const k = canvas.width / g.width_px;
      const r = canvas.getBoundingClientRect();
      const col = Math.floor((e.clientX - r.left) / (g.patch_px * k));
      const rw = Math.floor((e.clientY - r.top) / (g.patch_px * k));
      if (col < 0 || rw < 0 || col >= g.cols || rw >= g.rows) { tip.hidden = true; return; }
      const p = rw * g.cols + col;
      const st = ["compared", "compared (gaps filled)", "excluded: detector gaps", "excluded: outside the drift overlap"][current.latest.status[p]] || "";
      const th = current.thresholds ? current.thresholds[p] : null;
      const c = current.crossings[p];
      tip.textContent = `patch row ${rw}, column ${col}\n${st}\ndissimilarity ${fmt(current.latest.values[p])} (threshold ${th === null ? "calibrating" : fmt(th)})\n` +
        (c ? `first crossed at frame ${c.frame}${c.dose !== null ? `, ${fmt(c.dose)} e⁻/Å²` : ""}` : "has not crossed");
      tip.style.left = `${e.clientX - r.left + 12}px`;
      tip.style.top = `${e.clientY - r.top + 12}px`;
      tip.hidden = false;
    });
    canvas.addEventListener("mouseleave", () => { $("tip").hidden = true; });
  }
  hover($("frame"));

  connect();
})();
