// node --test web/tests  (the chart maths of web/charts.js; no browser needed)
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  addProbePoint,
  addProbeRun,
  addTrainEvent,
  chartOps,
  emptyHistory,
  endLiveRuns,
  etaSeconds,
  fitTicks,
  formatDuration,
  formatTick,
  gridLayout,
  legendLayout,
  linearScale,
  niceTicks,
  probeLegend,
  probePanels,
  probeRun,
  runNames,
  sameRun,
  segments,
  thin,
  trainPanels,
  trainStatus,
  PALETTE,
} from "../charts.js";

const measure = (text) => text.length * 6;
const isRound = (step) => [1, 2, 5].some((m) => Math.abs(step / m / 10 ** Math.round(Math.log10(step / m)) - 1) < 1e-9);

test("ticks are round numbers that cover the data", () => {
  for (const [lo, hi] of [[0.13, 2.7], [7.255, 7.295], [-3, 40], [0.99992, 1.00001], [1e-6, 2.4e-5]]) {
    const t = niceTicks(lo, hi);
    assert.ok(t.min <= lo && t.max >= hi, `${lo}..${hi} -> ${t.min}..${t.max}`);
    assert.ok(isRound(t.step), `step ${t.step}`);
    assert.equal(t.ticks[0], t.min);
    assert.ok(Math.abs(t.ticks.at(-1) - t.max) < t.step * 1e-6);
  }
});

test("a flat series still gets an axis, integer axes step by whole numbers", () => {
  const flat = niceTicks(1, 1);
  assert.ok(flat.min < 1 && flat.max > 1);
  const steps = niceTicks(0, 5, { count: 20, integer: true });
  assert.ok(steps.ticks.every(Number.isInteger));
  assert.deepEqual(steps.ticks, [0, 1, 2, 3, 4, 5]);
});

test("fitTicks keeps labels apart", () => {
  for (const pixels of [30, 60, 200]) {
    const t = fitTicks(3.5, 3.65, pixels, { minGap: 14 });
    assert.ok((t.ticks.length - 1) * 14 <= pixels || t.ticks.length <= 2, `${pixels}px: ${t.ticks}`);
  }
  assert.ok(fitTicks(0, 100, 400, { minGap: 14 }).ticks.length > fitTicks(0, 100, 60, { minGap: 14 }).ticks.length);
});

test("tick labels carry the decimals the step needs", () => {
  assert.equal(formatTick(0.9995, 0.0005), "0.9995");
  assert.equal(formatTick(7.25, 0.05), "7.25");
  assert.equal(formatTick(40, 10), "40");
  assert.equal(formatTick(0, 0.1), "0");
  assert.equal(formatTick(2.4e-5, 5e-6), "2.4e-5");
});

test("scales map the domain onto the range", () => {
  const s = linearScale([0, 10], [100, 0]);
  assert.equal(s(0), 100);
  assert.equal(s(10), 0);
  assert.equal(s(5), 50);
  assert.equal(linearScale([3, 3], [0, 8])(3), 4);
});

test("polylines break where a value is missing", () => {
  assert.deepEqual(segments([0, 1, 2, 3, 4], [1, null, 2, 3, NaN]), [[[0, 1]], [[2, 2], [3, 3]]]);
  assert.deepEqual(segments([0, 1], [null, null]), []);
});

test("durations read mm:ss or h:mm:ss", () => {
  assert.equal(formatDuration(0), "00:00");
  assert.equal(formatDuration(65.4), "01:05");
  assert.equal(formatDuration(3725), "1:02:05");
  assert.equal(formatDuration(null), "–");
});

test("ETA from the wall clock of this session, else from iteration times", () => {
  const clock = { iteration: 20, iterations: 100, startIteration: 10, startedAt: 0, now: 50_000 };
  assert.equal(etaSeconds(clock), 400); // 5 s per iteration, 80 left
  assert.equal(etaSeconds({ ...clock, startedAt: null, recentTimes: [2, 4, null] }), 240);
  assert.equal(etaSeconds({ ...clock, iteration: 100 }), 0);
  assert.equal(etaSeconds({ iteration: 3, iterations: 10, startIteration: 3 }), null);
});

const series = (node, label, norms, ratios = null) => ({
  node,
  label,
  step: norms.map((_, i) => i),
  norm: norms,
  norm_ref: ratios ? norms.map((n, i) => n / ratios[i]) : norms.map(() => null),
  ratio: ratios ?? norms.map(() => null),
});

test("live points grow a run; the finished run replaces it; the next step 0 starts another", () => {
  let runs = [];
  for (let step = 0; step < 3; step++) runs = addProbePoint(runs, { node: 5, label: "base", steps: 6, step, norm: 10 + step, ratio: 1 });
  assert.equal(runs.length, 1);
  assert.deepEqual(runs[0].norm, [10, 11, 12]);
  assert.equal(runs[0].live, true);
  assert.equal(runs[0].steps, 6, "the x axis spans the whole run from the first point");
  runs = addProbeRun(runs, series(5, "base", [10, 11, 12, 13, 14, 15], [1, 1, 1, 1, 1, 1]));
  assert.equal(runs.length, 1);
  assert.equal(runs[0].live, false);
  assert.equal(runs[0].norm.length, 6);
  runs = addProbePoint(runs, { node: 5, label: "base", steps: 6, step: 0, norm: 9 });
  assert.equal(runs.length, 2, "a new run is overlaid on the previous one");
  for (let i = 0; i < 6; i++) runs = addProbeRun(runs, series(5, "base", [i]), 4);
  assert.equal(runs.length, 4, "older runs drop out");
});

test("a prompt that ends mid-run leaves no run live", () => {
  const live = addProbePoint([], { node: 5, label: "base", steps: 6, step: 0, norm: 1 });
  const ended = endLiveRuns(live);
  assert.equal(ended[0].live, false);
  assert.deepEqual(ended[0].norm, [1]);
  assert.equal(endLiveRuns(ended), ended, "nothing to change: the same array");
});

test("runs compare by their points; duplicate labels are numbered", () => {
  const a = probeRun(series("3", "tuned", [1, 2]));
  assert.ok(sameRun(a, probeRun(series("3", "tuned", [1, 2]))));
  assert.ok(!sameRun(a, probeRun(series("3", "tuned", [1, 2.5]))));
  assert.deepEqual(runNames([a, a, probeRun(series("4", "", [1]))]), ["tuned #1", "tuned #2", "model"]);
});

test("probe panels: norms (dashed reference), the ratio panel only with a reference", () => {
  const plain = probePanels([probeRun(series(1, "plain", [3, 2, 1]))]);
  assert.equal(plain.length, 1);
  const runs = [probeRun(series(1, "base", [3, 2, 1], [1, 1, 1])), probeRun(series(2, "tuned", [4, 3, 2], [1.2, 1.1, 1.05]))];
  const [norm, ratio] = probePanels(runs);
  assert.equal(ratio.reference, 1);
  assert.deepEqual(
    norm.series.map((s) => [s.label, s.color, !!s.dash]),
    [["base", PALETTE[0], false], ["base ref", PALETTE[0], true], ["tuned", PALETTE[1], false], ["tuned ref", PALETTE[1], true]],
  );
  assert.deepEqual(ratio.series.map((s) => s.label), ["base", "tuned"]);
  assert.deepEqual(probeLegend([norm, ratio]).map((i) => i.label), ["base", "tuned", "‖v‖", "‖v_ref‖"]);
});

test("training history: start, iterations, evaluations, resume, end", () => {
  let h = addTrainEvent(emptyHistory(), { phase: "start", iterations: 10, start_iteration: 0 }, 0);
  h = addTrainEvent(h, { phase: "evaluation", iteration: 0, metrics: { rho_mean: 1.0, eval_reward: 0.5 } }, 0);
  for (let it = 1; it <= 4; it++) {
    const metrics = { reward_mean: it, penalty: 0.1, train_rho: 1 + it / 100, loss: 2, loss_base: 1.9, time_iteration: 3 };
    h = addTrainEvent(h, { phase: "iteration", iteration: it, iterations: 10, metrics }, it * 2000);
  }
  assert.deepEqual(h.points.map((p) => p.reward_mean), [1, 2, 3, 4]);
  assert.equal(trainStatus(h, 8000), "iteration 4 / 10 · ETA 00:12");
  const panels = trainPanels(h);
  assert.deepEqual(panels.map((p) => p.title), ["reward", "loss", "penalty", "rho"]);
  assert.equal(panels[3].reference, 1);
  assert.deepEqual(panels[3].series[1].ys, [1.0], "rho_mean comes from the evaluations");

  // resumed at iteration 2: later points go, earlier ones stay
  h = addTrainEvent(h, { phase: "start", iterations: 10, start_iteration: 2 }, 10_000);
  assert.deepEqual(h.points.map((p) => p.iteration), [1, 2]);
  h = addTrainEvent(h, { phase: "end", status: "finished", iteration: 10, lora: "x.safetensors" }, 20_000);
  assert.equal(trainStatus(h, 20_000), "finished: iteration 10 / 10 · x.safetensors");
  // a fresh run clears the curves
  h = addTrainEvent(h, { phase: "start", iterations: 5, start_iteration: 0 }, 30_000);
  assert.equal(h.points.length + h.evals.length, 0);
});

test("long runs thin their older half and keep the latest points exact", () => {
  const points = Array.from({ length: 3000 }, (_, i) => ({ iteration: i + 1 }));
  const kept = thin(points, 1000);
  assert.ok(kept.length <= 1000);
  assert.deepEqual(kept.slice(-500), points.slice(-500));
  assert.equal(kept[0].iteration, 1);
  assert.ok(kept.every((p, i) => i === 0 || p.iteration > kept[i - 1].iteration));
});

test("grid: two columns when wide enough, panels never overlap", () => {
  const wide = gridLayout(4, { width: 400, height: 300 });
  assert.equal(new Set(wide.map((r) => r.x)).size, 2);
  assert.equal(new Set(gridLayout(4, { width: 300, height: 300 }).map((r) => r.x)).size, 1);
  for (const a of wide) {
    for (const b of wide) {
      if (a === b) continue;
      const apart = a.x + a.width <= b.x || b.x + b.width <= a.x || a.y + a.height <= b.y || b.y + b.height <= a.y;
      assert.ok(apart);
    }
  }
});

test("legend items wrap into rows", () => {
  const items = ["base", "tuned", "NormGuard off", "NormGuard on"].map((label) => ({ label }));
  assert.equal(legendLayout(items, 1000, measure).height, 14);
  const narrow = legendLayout(items, 120, measure);
  assert.ok(narrow.height > 14);
  assert.ok(narrow.items.every((i) => i.x + i.width <= 120 || i.x === 0));
});

test("a chart draws one point per finite value, the ratio = 1 line, all inside the canvas", () => {
  const runs = [probeRun(series(1, "base", [3, 2, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1])), probeRun(series(2, "tuned", [4, null, 2, 2, 2, 2], [1.2, null, 1.1, 1.1, 1, 1]))];
  const panels = probePanels(runs);
  const width = 360;
  const height = 240;
  const { ops, drawn } = chartOps({ panels, legend: probeLegend(panels), width, height, measure });
  assert.deepEqual(
    drawn.map((d) => `${d.label}:${d.points}`),
    ["base:6", "base ref:6", "tuned:5", "tuned ref:5", "base:6", "tuned:5"],
  );
  const refLines = ops.filter((o) => o.op === "line" && o.stroke === "#b0b0b8" && o.dash);
  assert.equal(refLines.length, 1, "ratio = 1 reference line");
  for (const o of ops) {
    for (const [x, y] of o.points ?? [[o.x, o.y]]) {
      assert.ok(x >= 0 && x <= width && y >= 0 && y <= height, `${o.op} at ${x},${y}`);
    }
  }
  const empty = chartOps({ panels: [], width, height, measure, message: "nothing yet" });
  assert.deepEqual(empty.drawn, []);
  assert.ok(empty.ops.some((o) => o.text === "nothing yet"));
});
