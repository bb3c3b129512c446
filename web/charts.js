// Chart maths for the NormGuard frontend: scales, ticks, series bookkeeping, layout and the list of
// drawing operations. No DOM here, so `node --test web/tests` checks all of it; normguard.js only
// replays the operations on a <canvas>.

export const PALETTE = ["#4e9af1", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#edc948", "#76b7b2", "#ff9da7"];
export const THEME = {
  background: "#1e1e22",
  frame: "#55555c",
  grid: "#34343a",
  text: "#d0d0d6",
  muted: "#8e8e96",
  reference: "#b0b0b8",
  font: "11px sans-serif",
  titleFont: "bold 11px sans-serif",
};
export const MAX_PROBE_RUNS = 4; // runs a probe node keeps (older ones drop out)
export const MAX_TRAIN_POINTS = 1000; // per-iteration points a trainer node keeps (older ones thin out)

export function isFiniteNumber(v) {
  return typeof v === "number" && Number.isFinite(v);
}

/** [min, max] of the finite numbers in `values`, or null when there are none. */
export function extent(values) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (isFiniteNumber(v)) {
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
  }
  return lo <= hi ? [lo, hi] : null;
}

/** A round step (1, 2 or 5 times a power of ten) that cuts `span` into about `count` parts. */
export function niceStep(span, count = 5) {
  if (!(span > 0) || !(count > 0)) return 1;
  const raw = span / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const f = raw / power;
  return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * power;
}

/**
 * Axis bounds widened to round numbers and the tick values between them. A flat range is padded
 * so a constant series still gets an axis; `integer` keeps steps >= 1 (sampler steps, iterations).
 */
export function niceTicks(min, max, { count = 5, integer = false } = {}) {
  if (!isFiniteNumber(min) || !isFiniteNumber(max)) return { min: 0, max: 1, step: 0.2, ticks: [0, 0.2, 0.4, 0.6, 0.8, 1] };
  if (min > max) [min, max] = [max, min];
  if (min === max) {
    const pad = integer ? 1 : Math.abs(min) * 0.1 || 1;
    min -= pad;
    max += pad;
  }
  let step = niceStep(max - min, count);
  if (integer) step = Math.max(1, Math.round(step));
  const lo = roundTo(Math.floor(min / step + 1e-9) * step, step);
  const hi = roundTo(Math.ceil(max / step - 1e-9) * step, step);
  const ticks = [];
  for (let i = 0; lo + i * step <= hi + step * 1e-9; i++) ticks.push(roundTo(lo + i * step, step));
  return { min: lo, max: hi, step, ticks };
}

function roundTo(v, step) {
  const digits = Math.max(0, -Math.floor(Math.log10(step)) + 1);
  return Number(v.toFixed(Math.min(digits, 15)));
}

/** niceTicks with as many ticks as fit `pixels` at `minGap` pixels apart (at least two). */
export function fitTicks(min, max, pixels, { minGap = 16, integer = false } = {}) {
  let count = Math.max(1, Math.floor(pixels / (minGap * 1.6)));
  let t = niceTicks(min, max, { count, integer });
  while (count > 1 && (t.ticks.length - 1) * minGap > pixels) {
    count -= 1;
    t = niceTicks(min, max, { count, integer });
  }
  return t;
}

/** A tick label with as many decimals as the step needs (exponent form for tiny/huge values). */
export function formatTick(v, step) {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(1).replace("e+", "e");
  const decimals = Math.max(0, Math.min(6, -Math.floor(Math.log10(step) + 1e-9)));
  return v.toFixed(decimals);
}

/** A value compact enough for a status line (4 significant digits). */
export function formatValue(v) {
  if (!isFiniteNumber(v)) return "–";
  const a = Math.abs(v);
  return a !== 0 && (a >= 1e5 || a < 1e-3) ? v.toExponential(2) : String(Number(v.toPrecision(4)));
}

/** A linear map from `domain` to `range` (a zero-width domain maps to the range's middle). */
export function linearScale([d0, d1], [r0, r1]) {
  const k = d1 === d0 ? 0 : (r1 - r0) / (d1 - d0);
  return (v) => (d1 === d0 ? (r0 + r1) / 2 : r0 + (v - d0) * k);
}

/** Polyline pieces of (x, y) pairs, split where y is missing (the probe leaves unmeasured values null). */
export function segments(xs, ys) {
  const out = [];
  let current = [];
  const n = Math.min(xs.length, ys.length);
  for (let i = 0; i < n; i++) {
    if (isFiniteNumber(xs[i]) && isFiniteNumber(ys[i])) {
      current.push([xs[i], ys[i]]);
    } else if (current.length) {
      out.push(current);
      current = [];
    }
  }
  if (current.length) out.push(current);
  return out;
}

/** Seconds as "m:ss" (or "h:mm:ss"); "–" when unknown. */
export function formatDuration(seconds) {
  if (!isFiniteNumber(seconds) || seconds < 0) return "–";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${String(m).padStart(2, "0")}:${ss}`;
}

/**
 * Seconds left in a training run. Prefers wall-clock time since this session's first iteration
 * (it includes evaluations and checkpoints); falls back to the mean `time_iteration` of the
 * latest iterations when the page joined mid-run.
 */
export function etaSeconds({ iteration, iterations, startIteration, startedAt, now, recentTimes = [] }) {
  if (!isFiniteNumber(iteration) || !isFiniteNumber(iterations)) return null;
  const left = iterations - iteration;
  if (left <= 0) return 0;
  const done = iteration - (startIteration ?? iteration);
  if (done > 0 && isFiniteNumber(startedAt) && isFiniteNumber(now) && now > startedAt) {
    return ((now - startedAt) / 1000 / done) * left;
  }
  const times = recentTimes.filter(isFiniteNumber);
  if (!times.length) return null;
  return (times.reduce((a, b) => a + b, 0) / times.length) * left;
}

// --- probe runs ---------------------------------------------------------------------------------

const PROBE_KEYS = ["step", "norm", "norm_ref", "ratio"];

/** The columns a chart needs from a probe log (ProbeLog.series(): the event or the graph's ui output). */
export function probeRun(series) {
  const run = { label: String(series.label ?? ""), node: series.node == null ? null : String(series.node) };
  for (const k of PROBE_KEYS) run[k] = Array.isArray(series[k]) ? series[k].map((v) => (isFiniteNumber(v) ? v : null)) : [];
  run.steps = run.step.length;
  run.live = false;
  return run;
}

/**
 * A live point ("normguard.probe.step") added to `runs`: step 0 (or a run that already has this
 * step) starts a new live run of that probe; later steps extend it. Returns a new array.
 */
export function addProbePoint(runs, point, max = MAX_PROBE_RUNS) {
  const node = point.node == null ? null : String(point.node);
  const last = runs.length ? runs[runs.length - 1] : null;
  const extend = last && last.live && last.node === node && point.step > last.step[last.step.length - 1];
  const run = extend
    ? { ...last, ...Object.fromEntries(PROBE_KEYS.map((k) => [k, [...last[k]]])) }
    : { label: String(point.label ?? ""), node, step: [], norm: [], norm_ref: [], ratio: [], live: true };
  run.steps = isFiniteNumber(point.steps) ? point.steps : run.steps;
  for (const k of PROBE_KEYS) run[k].push(isFiniteNumber(point[k]) ? point[k] : null);
  const rest = extend ? runs.slice(0, -1) : runs;
  return [...rest, run].slice(-max);
}

/** A finished run ("normguard.probe") replaces the live run of the same probe, else it is appended. */
export function addProbeRun(runs, series, max = MAX_PROBE_RUNS) {
  const run = probeRun(series);
  const last = runs.length ? runs[runs.length - 1] : null;
  const rest = last && last.live && last.node === run.node ? runs.slice(0, -1) : runs;
  return [...rest, run].slice(-max);
}

/** The runs with none left live (the prompt ended, finished or not): `runs` itself if none was. */
export function endLiveRuns(runs) {
  return runs.some((r) => r.live) ? runs.map((r) => (r.live ? { ...r, live: false } : r)) : runs;
}

/** Whether two runs hold the same points (a run seen live and again in the graph's output). */
export function sameRun(a, b) {
  return a.node === b.node && a.label === b.label && PROBE_KEYS.every((k) => JSON.stringify(a[k]) === JSON.stringify(b[k]));
}

/** Legend names: the probe's label, numbered when several runs share it ("base #2"). */
export function runNames(runs) {
  const counts = {};
  for (const r of runs) counts[r.label || "model"] = (counts[r.label || "model"] || 0) + 1;
  const seen = {};
  return runs.map((r) => {
    const name = r.label || "model";
    seen[name] = (seen[name] || 0) + 1;
    return counts[name] > 1 ? `${name} #${seen[name]}` : name;
  });
}

/**
 * Panels of a probe chart: ||v|| per step (dashed: ||v_ref||) and, when any run has a reference,
 * the ratio ||v|| / ||v_ref|| with the line ratio = 1. Colours follow the run's place.
 */
export function probePanels(runs) {
  const names = runNames(runs);
  const norm = { title: "‖v‖ per step", xLabel: "step", series: [], xMax: 0 };
  const ratio = { title: "‖v‖ / ‖v_ref‖", xLabel: "step", series: [], reference: 1, xMax: 0 };
  runs.forEach((run, i) => {
    const color = PALETTE[i % PALETTE.length];
    const xMax = Math.max(0, (run.steps || run.step.length) - 1);
    norm.xMax = ratio.xMax = Math.max(norm.xMax, xMax);
    norm.series.push({ label: names[i], color, xs: run.step, ys: run.norm });
    if (run.norm_ref.some(isFiniteNumber)) {
      norm.series.push({ label: `${names[i]} ref`, color, xs: run.step, ys: run.norm_ref, dash: true, legend: false });
    }
    if (run.ratio.some(isFiniteNumber)) ratio.series.push({ label: names[i], color, xs: run.step, ys: run.ratio });
  });
  return ratio.series.length ? [norm, ratio] : [norm];
}

/** Legend entries of a chart: one per coloured series, plus the line styles when a reference is drawn. */
export function probeLegend(panels) {
  const items = panels[0].series.filter((s) => s.legend !== false).map((s) => ({ label: s.label, color: s.color }));
  if (panels[0].series.some((s) => s.dash)) {
    items.push({ label: "‖v‖", color: THEME.muted }, { label: "‖v_ref‖", color: THEME.muted, dash: true });
  }
  return items;
}

// --- training history ---------------------------------------------------------------------------

export const TRAIN_METRICS = ["reward_mean", "penalty", "train_rho", "loss", "loss_base"];
export const EVAL_METRICS = ["rho_mean", "eval_reward"];

export function emptyHistory() {
  return { iterations: null, startIteration: 0, iteration: 0, status: "", points: [], evals: [], startedAt: null, lastAt: null, warnings: [] };
}

/** Every other point of the older half, so a long run stays under `max` points (the latest stay exact). */
export function thin(points, max = MAX_TRAIN_POINTS) {
  if (points.length <= max) return points;
  const keep = Math.floor(max / 2);
  const old = points.slice(0, points.length - keep).filter((_, i) => i % 2 === 0);
  return thin([...old, ...points.slice(points.length - keep)], max);
}

/** The history after one "normguard.train" event (`now` in ms, for the ETA). Returns a new object. */
export function addTrainEvent(history, event, now) {
  const h = { ...history, points: history.points, evals: history.evals, warnings: history.warnings };
  const metrics = event.metrics || {};
  if (event.phase === "start") {
    h.iterations = event.iterations;
    h.startIteration = event.start_iteration ?? 0;
    h.iteration = h.startIteration;
    h.status = "training";
    h.startedAt = now;
    h.warnings = [];
    // a fresh run (not a resume) clears older curves
    if (!h.startIteration) {
      h.points = [];
      h.evals = [];
    } else {
      h.points = h.points.filter((p) => p.iteration <= h.startIteration);
      h.evals = h.evals.filter((p) => p.iteration <= h.startIteration);
    }
  } else if (event.phase === "iteration") {
    const point = { iteration: event.iteration };
    for (const k of [...TRAIN_METRICS, "time_iteration"]) point[k] = isFiniteNumber(metrics[k]) ? metrics[k] : null;
    h.points = thin([...h.points.filter((p) => p.iteration < event.iteration), point]);
    h.iteration = event.iteration;
    h.iterations = event.iterations ?? h.iterations;
    h.status = "training";
    h.lastAt = now;
  } else if (event.phase === "evaluation") {
    const point = { iteration: event.iteration };
    for (const k of EVAL_METRICS) point[k] = isFiniteNumber(metrics[k]) ? metrics[k] : null;
    h.evals = [...h.evals.filter((p) => p.iteration !== event.iteration), point].sort((a, b) => a.iteration - b.iteration);
    if (event.warnings && event.warnings.length) h.warnings = [...event.warnings];
  } else if (event.phase === "end") {
    h.status = event.status || "finished";
    h.iteration = event.iteration ?? h.iteration;
    h.lora = event.lora;
  }
  return h;
}

/** "iteration 12 / 100 · ETA 03:20" (or the final status). */
export function trainStatus(history, now) {
  if (history.iterations == null) return "waiting for training to start";
  const head = `iteration ${history.iteration} / ${history.iterations}`;
  if (history.status && history.status !== "training") {
    return `${history.status}: ${head}${history.lora ? ` · ${history.lora}` : ""}`;
  }
  const eta = etaSeconds({
    iteration: history.iteration,
    iterations: history.iterations,
    startIteration: history.startIteration,
    startedAt: history.startedAt,
    now,
    recentTimes: history.points.slice(-5).map((p) => p.time_iteration),
  });
  return `${head} · ETA ${formatDuration(eta)}`;
}

/** Panels of the trainer chart: reward, loss terms, penalty, rho (ratio = 1 line). */
export function trainPanels(history) {
  const its = history.points.map((p) => p.iteration);
  const col = (k) => history.points.map((p) => p[k]);
  const evIts = history.evals.map((p) => p.iteration);
  const evCol = (k) => history.evals.map((p) => p[k]);
  const xMax = Math.max(1, history.iterations ?? 0, ...its);
  const panel = (title, series, extra = {}) => ({ title, xLabel: "iteration", xMin: 0, xMax, series, inlineLegend: true, ...extra });
  return [
    panel("reward", [
      { label: "reward_mean", legend: "mean", color: PALETTE[0], xs: its, ys: col("reward_mean") },
      { label: "eval_reward", legend: "eval", color: PALETTE[5], xs: evIts, ys: evCol("eval_reward"), markers: true },
    ]),
    panel("loss", [
      { label: "loss", legend: "total", color: PALETTE[1], xs: its, ys: col("loss") },
      { label: "loss_base", legend: "base", color: PALETTE[4], xs: its, ys: col("loss_base"), dash: true },
    ]),
    panel("penalty", [{ label: "penalty", legend: false, color: PALETTE[3], xs: its, ys: col("penalty") }]),
    panel(
      "rho",
      [
        { label: "train_rho", legend: "train", color: PALETTE[2], xs: its, ys: col("train_rho") },
        { label: "rho_mean", legend: "eval", color: PALETTE[6], xs: evIts, ys: evCol("rho_mean"), markers: true },
      ],
      { reference: 1 },
    ),
  ];
}

// --- layout and drawing operations --------------------------------------------------------------

/** Rectangles of `n` panels in a grid: two columns when each would still be `minWidth` wide. */
export function gridLayout(n, { x = 0, y = 0, width, height, minWidth = 170, gap = 10 }) {
  const cols = n > 1 && width >= 2 * minWidth + gap ? 2 : 1;
  const rows = Math.ceil(n / cols);
  const w = (width - gap * (cols - 1)) / cols;
  const h = (height - gap * (rows - 1)) / rows;
  return Array.from({ length: n }, (_, i) => ({
    x: x + (i % cols) * (w + gap),
    y: y + Math.floor(i / cols) * (h + gap),
    width: w,
    height: h,
  }));
}

/** Legend items placed left to right, wrapping into rows of `width`; returns positions and height. */
export function legendLayout(items, width, measure, { swatch = 16, gap = 12, rowHeight = 14 } = {}) {
  const placed = [];
  let x = 0;
  let row = 0;
  for (const item of items) {
    const w = swatch + 4 + measure(item.label);
    if (x > 0 && x + w > width) {
      x = 0;
      row += 1;
    }
    placed.push({ ...item, x, y: row * rowHeight, width: w });
    x += w + gap;
  }
  return { items: placed, height: items.length ? (row + 1) * rowHeight : 0 };
}

/**
 * Drawing operations for one panel inside `rect`: a title row (title, the series names in their
 * colours when `panel.inlineLegend`, the x quantity), grid, ticks, the reference line and the
 * series (lines, with dots where points are few). `measure(text)` gives a label's width.
 * Returns { ops, drawn: [{ label, points }] } where points counts the finite points drawn.
 */
export function panelOps(panel, rect, measure) {
  const ops = [];
  const titleHeight = 18;
  const plotTop = rect.y + titleHeight + 6;
  const plotHeight = Math.max(10, rect.y + rect.height - 16 - plotTop);
  const ys = panel.series.flatMap((s) => s.ys);
  if (isFiniteNumber(panel.reference)) ys.push(panel.reference);
  const [y0, y1] = extent(ys) ?? [0, 1];
  const yt = fitTicks(y0, y1, plotHeight, { minGap: 14 });
  const xs = panel.series.flatMap((s) => s.xs);
  const [x0, x1] = extent([...xs, panel.xMin ?? 0, panel.xMax ?? 0]) ?? [0, 1];
  const labelWidth = Math.max(...yt.ticks.map((t) => measure(formatTick(t, yt.step))));
  const plot = { x: rect.x + labelWidth + 6, y: plotTop, width: Math.max(10, rect.width - labelWidth - 12), height: plotHeight };
  const xt = fitTicks(x0, x1, plot.width, { minGap: 10 + measure(formatTick(x1, 1)) * 2, integer: true });
  const sx = linearScale([xt.min, xt.max], [plot.x, plot.x + plot.width]);
  const sy = linearScale([yt.min, yt.max], [plot.y + plot.height, plot.y]);
  const text = (x, y, value, fill, align = "left", baseline = "middle", font = THEME.font) =>
    ops.push({ op: "text", x, y, text: value, fill, font, align, baseline });

  // title row: title, inline legend, x quantity on the right
  const rowY = rect.y + titleHeight / 2;
  text(rect.x, rowY, panel.title, THEME.text, "left", "middle", THEME.titleFont);
  let lx = rect.x + measure(panel.title) + 12;
  const right = rect.x + rect.width - (panel.xLabel ? measure(panel.xLabel) + 10 : 0);
  if (panel.inlineLegend) {
    for (const s of panel.series.filter((x) => x.legend !== false)) {
      const name = typeof s.legend === "string" ? s.legend : s.label;
      const w = 18 + measure(name);
      if (lx + w > right) break;
      if (s.markers) ops.push({ op: "dots", points: [[lx + 6, rowY]], fill: s.color, radius: 3 });
      else ops.push({ op: "line", points: [[lx, rowY], [lx + 12, rowY]], stroke: s.color, width: 2, dash: s.dash ? [4, 2] : null });
      text(lx + 15, rowY, name, THEME.muted);
      lx += w + 8;
    }
  }
  if (panel.xLabel) text(rect.x + rect.width, rowY, panel.xLabel, THEME.muted, "right");

  for (const t of yt.ticks) {
    const y = sy(t);
    ops.push({ op: "line", points: [[plot.x, y], [plot.x + plot.width, y]], stroke: THEME.grid, width: 1 });
    text(plot.x - 4, y, formatTick(t, yt.step), THEME.muted, "right");
  }
  for (const t of xt.ticks) {
    const x = sx(t);
    ops.push({ op: "line", points: [[x, plot.y + plot.height], [x, plot.y + plot.height + 3]], stroke: THEME.frame, width: 1 });
    text(x, plot.y + plot.height + 4, formatTick(t, xt.step), THEME.muted, "center", "top");
  }
  ops.push({ op: "rect", x: plot.x, y: plot.y, width: plot.width, height: plot.height, stroke: THEME.frame });
  if (isFiniteNumber(panel.reference)) {
    const y = sy(panel.reference);
    ops.push({ op: "line", points: [[plot.x, y], [plot.x + plot.width, y]], stroke: THEME.reference, width: 1, dash: [2, 3] });
  }
  const drawn = [];
  for (const s of panel.series) {
    const pieces = segments(s.xs, s.ys);
    const points = pieces.reduce((n, p) => n + p.length, 0);
    drawn.push({ label: s.label, points });
    for (const piece of pieces) {
      const px = piece.map(([x, y]) => [sx(x), sy(y)]);
      if (px.length > 1 && !s.markers) ops.push({ op: "line", points: px, stroke: s.color, width: 1.5, dash: s.dash ? [5, 3] : null });
      if (s.markers || piece.length <= 40) ops.push({ op: "dots", points: px, fill: s.color, radius: s.markers ? 3 : 2 });
    }
  }
  return { ops, drawn };
}

/**
 * The whole chart: a status line (optional), the legend, then the panels in a grid. Returns
 * { ops, drawn: [{ panel, label, points }] } -- `drawn` is what tests and the e2e check read.
 */
export function chartOps({ panels, legend = [], status = "", width, height, measure, message = "" }) {
  const ops = [{ op: "rect", x: 0, y: 0, width, height, fill: THEME.background }];
  let top = 4;
  if (status) {
    ops.push({ op: "text", x: 6, y: top + 6, text: status, fill: THEME.text, font: THEME.font, align: "left", baseline: "middle" });
    top += 16;
  }
  const lg = legendLayout(legend, width - 12, measure);
  for (const item of lg.items) {
    const y = top + item.y + 6;
    ops.push({ op: "line", points: [[6 + item.x, y], [6 + item.x + 16, y]], stroke: item.color, width: 2, dash: item.dash ? [4, 2] : null });
    ops.push({ op: "text", x: 6 + item.x + 20, y, text: item.label, fill: THEME.text, font: THEME.font, align: "left", baseline: "middle" });
  }
  top += lg.height + (lg.height ? 6 : 0);
  const drawn = [];
  if (message || !panels.length) {
    ops.push({ op: "text", x: width / 2, y: (top + height) / 2, text: message || "no data yet", fill: THEME.muted, font: THEME.font, align: "center", baseline: "middle" });
    return { ops, drawn };
  }
  const rects = gridLayout(panels.length, { x: 6, y: top, width: width - 12, height: height - top - 4 });
  panels.forEach((panel, i) => {
    const out = panelOps(panel, rects[i], measure);
    ops.push(...out.ops);
    for (const d of out.drawn) drawn.push({ panel: panel.title, ...d });
  });
  return { ops, drawn };
}
