// NormGuard charts in the ComfyUI frontend: a <canvas> DOM widget on NormGuardVelocityNormProbe,
// NormGuardVelocityNormGraph and NormGuardTrainLoRA, fed by the pack's websocket events and by the graph
// node's ui output. The series live in node.properties, so they are saved with the workflow.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import {
  addProbePoint,
  addProbeRun,
  addTrainEvent,
  chartOps,
  emptyHistory,
  endLiveRuns,
  probeLegend,
  probePanels,
  probeRun,
  sameRun,
  trainPanels,
  trainStatus,
  MAX_PROBE_RUNS,
} from "./charts.js";
import { allNodes, inputsFedBy, nodeByExecutionId } from "./graphwalk.js";

const PROBE = "NormGuardVelocityNormProbe";
const GRAPH = "NormGuardVelocityNormGraph";
const TRAIN = "NormGuardTrainLoRA";
// ids before the pack prefix: saved workflows keep them (nodes/aliases.py registers both)
const OLD_IDS = { VelocityNormProbe: PROBE, VelocityNormGraph: GRAPH };
const kind = (type) => OLD_IDS[type] ?? type;
const RUNS = "normguard_runs"; // node property: probe runs (probe and graph nodes)
const HISTORY = "normguard_history"; // node property: training curves (trainer node)
const WIDGET = "normguard_chart";

/** Replays chartOps' operations on a 2D context. */
function render(ctx, ops) {
  for (const o of ops) {
    ctx.save();
    if (o.op === "rect") {
      if (o.fill) {
        ctx.fillStyle = o.fill;
        ctx.fillRect(o.x, o.y, o.width, o.height);
      }
      if (o.stroke) {
        ctx.strokeStyle = o.stroke;
        ctx.strokeRect(o.x + 0.5, o.y + 0.5, o.width, o.height);
      }
    } else if (o.op === "line") {
      ctx.strokeStyle = o.stroke;
      ctx.lineWidth = o.width ?? 1;
      ctx.setLineDash(o.dash ?? []);
      ctx.beginPath();
      o.points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
      ctx.stroke();
    } else if (o.op === "dots") {
      ctx.fillStyle = o.fill;
      for (const [x, y] of o.points) {
        ctx.beginPath();
        ctx.arc(x, y, o.radius, 0, 2 * Math.PI);
        ctx.fill();
      }
    } else if (o.op === "text") {
      ctx.fillStyle = o.fill;
      ctx.font = o.font;
      ctx.textAlign = o.align;
      ctx.textBaseline = o.baseline;
      ctx.fillText(o.text, o.x, o.y);
    }
    ctx.restore();
  }
}

/** What a node's chart shows, from its properties. */
function chartContent(node) {
  if (node.comfyClass === TRAIN) {
    const history = node.properties[HISTORY] ?? emptyHistory();
    const started = history.iterations != null;
    return {
      panels: started ? trainPanels(history) : [],
      legend: [],
      status: trainStatus(history, Date.now()),
      message: started ? "" : "curves appear once training starts",
    };
  }
  const runs = node.properties[RUNS] ?? [];
  const panels = runs.length ? probePanels(runs) : [];
  return {
    panels,
    legend: panels.length ? probeLegend(panels) : [],
    status: runs.some((r) => r.live) ? "sampling…" : "",
    message: runs.length ? "" : "‖v‖ per step appears while sampling",
  };
}

/** Adds the chart widget: a resizable <canvas> that redraws from the node's properties. */
function addChart(node, minHeight) {
  const box = document.createElement("div");
  box.className = "normguard-chart";
  box.style.cssText = "position:relative;width:100%;height:100%;min-height:" + minHeight + "px;overflow:hidden;";
  const canvas = document.createElement("canvas");
  canvas.style.cssText = "position:absolute;left:0;top:0;width:100%;height:100%;border-radius:4px;";
  box.appendChild(canvas);
  const widget = node.addDOMWidget(WIDGET, "normguard-chart", box, {
    serialize: false,
    hideOnZoom: false,
    getMinHeight: () => minHeight,
  });
  widget.serialize = false; // keep it out of widgets_values (they map onto the node's inputs)

  const draw = () => {
    const rect = box.getBoundingClientRect();
    const scale = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(box.clientWidth || rect.width));
    const height = Math.max(1, Math.round(box.clientHeight || rect.height));
    if (canvas.width !== Math.round(width * scale) || canvas.height !== Math.round(height * scale)) {
      canvas.width = Math.round(width * scale);
      canvas.height = Math.round(height * scale);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(scale, 0, 0, scale, 0, 0);
    const measure = (text) => {
      ctx.font = "11px sans-serif";
      return ctx.measureText(text).width;
    };
    const { ops, drawn } = chartOps({ ...chartContent(node), width, height, measure });
    render(ctx, ops);
    canvas.dataset.normguardNode = String(node.id); // the id changes when the node joins a graph
    canvas.dataset.drawn = JSON.stringify(drawn); // what was plotted, for the end-to-end test
    canvas.dataset.draws = String(Number(canvas.dataset.draws || 0) + 1);
  };
  let frame = 0;
  const schedule = () => {
    if (!frame) frame = requestAnimationFrame(() => ((frame = 0), draw()));
  };
  const observer = new ResizeObserver(schedule);
  observer.observe(box);
  const onRemove = widget.onRemove;
  widget.onRemove = function () {
    observer.disconnect();
    return onRemove?.apply(this, arguments);
  };
  node.normguardChart = { schedule };
}

function setProperty(node, key, value) {
  node.properties[key] = value;
  node.normguardChart?.schedule();
}

/** Graph nodes whose probe_log inputs come from the probe at execution id `id`, in its own graph or
 *  across subgraph boundaries. */
function graphsFedBy(id) {
  const targets = inputsFedBy(app.graph, id).filter(
    ({ node, input }) => kind(node.comfyClass) === GRAPH && input.name?.startsWith("probe_log"),
  );
  return [...new Set(targets.map(({ node }) => node))];
}

/** The node the server's id names: "5" in the root graph, "12:5" inside subgraph node 12, and so on. */
function nodeById(id) {
  return id == null ? null : nodeByExecutionId(app.graph, String(id));
}

/** Nodes that chart a probe's events: the probe itself and the graph nodes it feeds. */
function probeTargets(detail) {
  const probe = nodeById(detail?.node);
  return kind(probe?.comfyClass) === PROBE ? [probe, ...graphsFedBy(String(detail.node))] : [];
}

function onProbeStep({ detail }) {
  for (const node of probeTargets(detail)) {
    setProperty(node, RUNS, addProbePoint(node.properties[RUNS] ?? [], detail, MAX_PROBE_RUNS));
  }
}

function onProbeRun({ detail }) {
  for (const node of probeTargets(detail)) {
    setProperty(node, RUNS, addProbeRun(node.properties[RUNS] ?? [], detail, MAX_PROBE_RUNS));
  }
}

/** A prompt ended (also cancelled or failed): no probe run is live any more. */
function onPromptEnd() {
  for (const node of allNodes(app.graph)) {
    const runs = node.properties?.[RUNS];
    if (runs && endLiveRuns(runs) !== runs) setProperty(node, RUNS, endLiveRuns(runs));
  }
}

function onTrain({ detail }) {
  const node = nodeById(detail?.node);
  if (node?.comfyClass !== TRAIN) return;
  setProperty(node, HISTORY, addTrainEvent(node.properties[HISTORY] ?? emptyHistory(), detail, Date.now()));
}

app.registerExtension({
  name: "normguard.charts",

  async setup() {
    api.addEventListener("normguard.probe.step", onProbeStep);
    api.addEventListener("normguard.probe", onProbeRun);
    api.addEventListener("normguard.train", onTrain);
    for (const type of ["execution_success", "execution_error", "execution_interrupted"]) {
      api.addEventListener(type, onPromptEnd);
    }
    // the ETA counts down between iterations
    setInterval(() => {
      for (const n of allNodes(app.graph)) {
        if (n.comfyClass === TRAIN && n.properties[HISTORY]?.status === "training") n.normguardChart?.schedule();
      }
    }, 1000);
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    const minHeight = { [PROBE]: 200, [GRAPH]: 240, [TRAIN]: 340 }[kind(nodeData.name)];
    if (!minHeight) return;

    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      addChart(this, minHeight);
      this.setSize([Math.max(this.size[0], 360), this.computeSize()[1]]);
      return result;
    };

    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      const result = onConfigure?.apply(this, arguments);
      this.normguardChart?.schedule(); // a reopened workflow: draw the saved series
      return result;
    };

    if (kind(nodeData.name) === GRAPH) {
      // the graph's ui output carries every log it drew: the authoritative runs (also from history)
      const onExecuted = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (output) {
        const result = onExecuted?.apply(this, arguments);
        const logs = output?.normguard_probe;
        if (Array.isArray(logs) && logs.length) {
          setProperty(this, RUNS, logs.map(probeRun));
          // probes whose sampler came from ComfyUI's cache sent no events: give them the run too
          for (const log of logs) {
            const probe = nodeById(log.node);
            const runs = kind(probe?.comfyClass) === PROBE ? probe.properties[RUNS] ?? [] : null;
            if (runs && !runs.some((r) => sameRun(r, probeRun(log)))) setProperty(probe, RUNS, addProbeRun(runs, log));
          }
        }
        return result;
      };
    }
  },
});

