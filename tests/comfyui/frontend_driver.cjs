// Drives ComfyUI's real frontend in headless Chromium (playwright-core + a system chromium) for
// tests/comfyui/test_frontend.py. Usage: node frontend_driver.cjs JOB.json > RESULT.json
//
// JOB: { url, chromium, playwright, mode: "classic" | "vue", outDir,
//        workflows: [{ name, spec | graph, queue: bool, timeoutMs, shots: { <nodeKey>: file },
//                      subgraph: [nodeKey], nested: [nodeKey], stayOutside: bool }],
//        page_shot: file | null }
// A `spec` is built in the page from the node definitions the server sent ({ nodes: [{ key, type,
// pos, widgets: {name: value}, size }], links: [[fromKey, outputIndex, toKey, inputName]] }); a
// `graph` is a UI-format workflow loaded as the user would open it. Each workflow is loaded, checked
// for node types the frontend does not know, optionally queued (with the chart canvases sampled
// while it runs), then saved and reopened to check that the charts survive. With `subgraph`, those
// nodes of the spec are converted into a subgraph once loaded and the canvas shows its inside (or the
// root graph, with `stayOutside`); with `nested` as well, those of them go on into a subgraph inside
// that one, and the canvas shows the innermost.
"use strict";
const fs = require("fs");
const os = require("os");
const path = require("path");

const job = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const { chromium } = require(job.playwright);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "normguard-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: job.chromium,
    headless: true,
    viewport: { width: 1500, height: 950 },
    deviceScaleFactor: job.scale || 1,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const result = { console: [], pageErrors: [], failedRequests: [], workflows: [] };
  try {
    const page = context.pages()[0] || (await context.newPage());
    page.on("console", (m) => {
      if (m.type() === "error" || m.type() === "warning") {
        result.console.push({ type: m.type(), text: m.text(), url: m.location().url || "" });
      }
    });
    page.on("pageerror", (e) => result.pageErrors.push(String(e && e.stack ? e.stack : e)));
    page.on("response", (r) => {
      if (r.status() >= 400) result.failedRequests.push({ status: r.status(), url: r.url() });
    });
    const t0 = Date.now();
    const loadTimeout = job.loadTimeoutMs || 90000;
    page.setDefaultTimeout(loadTimeout); // a starved machine: clicks and waits may take minutes too
    await page.goto(job.url, { waitUntil: "domcontentloaded", timeout: loadTimeout });
    await page.waitForFunction(() => window.app && window.app.canvas && window.app.canvas.graph, null, {
      timeout: loadTimeout,
    });
    await page.waitForTimeout(1500);
    await page.keyboard.press("Escape"); // the first-run templates dialog
    result.loadMs = Date.now() - t0;
    result.extensionLoaded = await page.evaluate(() =>
      (window.app.extensionManager?.extensions ?? window.app.extensions ?? []).some((e) => e.name === "normguard.charts"),
    );
    await page.evaluate(async () => {
      const settings = window.app.extensionManager.setting;
      await settings.set("Comfy.Minimap.Visible", false);
      await settings.set("LiteGraph.Canvas.MinFontSizeForLOD", 0); // readable text in zoomed-out shots
    });

    for (const wf of job.workflows) {
      const out = { name: wf.name };
      result.workflows.push(out);
      await runWorkflow(page, wf, out);
    }
    if (job.templates_shot) await templatesDialog(page, job.templates_shot);
  } catch (e) {
    result.driverError = String(e && e.stack ? e.stack : e);
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  process.stdout.write(JSON.stringify(result));
}

async function runWorkflow(page, wf, out) {
  out.mode = wf.mode;
  out.vueNodes = await page.evaluate(async (vue) => {
    await window.app.extensionManager.setting.set("Comfy.VueNodes.Enabled", vue);
    return window.app.extensionManager.setting.get("Comfy.VueNodes.Enabled");
  }, wf.mode === "vue");
  await page.waitForTimeout(500);
  // build or open the workflow; report node types the frontend does not know
  const loaded = await page.evaluate(
    async ({ spec, graph }) => {
      const app = window.app;
      const LG = window.LiteGraph;
      const keys = {};
      if (spec) {
        await app.loadGraphData({ nodes: [], links: [], version: 0.4 }, true, false, "spec");
        const byKey = {};
        const columns = {}; // nodes given a column instead of a position are stacked in it
        for (const n of spec.nodes) {
          const node = LG.createNode(n.type);
          if (!node) throw new Error(`unknown node type ${n.type}`);
          node.pos = n.pos ?? [0, 0];
          app.graph.add(node);
          for (const [name, value] of Object.entries(n.widgets || {})) {
            // a seed's "control after generate" widget is the seed widget's linked widget (frontend 1.49
            // names it after its value)
            const w =
              name === "control_after_generate"
                ? node.widgets.find((x) => x.linkedWidgets?.length)?.linkedWidgets[0]
                : node.widgets.find((x) => x.name === name);
            if (!w) throw new Error(`${n.type} has no widget ${name} (${node.widgets.map((x) => x.name)})`);
            w.value = value;
          }
          if (n.size) node.setSize([n.size[0], Math.max(n.size[1], node.computeSize()[1])]);
          if (n.title) node.title = n.title;
          if (n.color) [node.color, node.bgcolor] = n.color;
          if (n.col != null) (columns[n.col] ??= []).push(node);
          byKey[n.key] = node;
        }
        let x = 0;
        for (const col of Object.keys(columns).sort((a, b) => a - b)) {
          let y = 0;
          for (const node of columns[col]) {
            node.pos = [x, y + LG.NODE_TITLE_HEIGHT];
            y += node.size[1] + LG.NODE_TITLE_HEIGHT + 30;
          }
          x += Math.max(...columns[col].map((n) => n.size[0])) + 40;
        }
        for (const [from, slot, to, input] of spec.links) {
          const target = byKey[to];
          const index = target.inputs.findIndex((i) => i.name === input);
          if (index < 0) throw new Error(`${target.type} has no input ${input}`);
          if (!byKey[from].connect(slot, target, index)) throw new Error(`cannot link ${from}:${slot} -> ${to}.${input}`);
        }
        for (const [key, node] of Object.entries(byKey)) keys[key] = String(node.id);
        graph = JSON.parse(JSON.stringify(app.graph.serialize()));
      }
      await app.loadGraphData(graph, true, false, "normguard-test");
      await new Promise((r) => setTimeout(r, 300));
      const nodes = app.graph._nodes;
      const missing = [...new Set(nodes.filter((n) => !LG.registered_node_types[n.type]).map((n) => n.type))];
      return { graph, missing, keys, nodeCount: nodes.length };
    },
    { spec: wf.spec || null, graph: wf.graph || null },
  );
  Object.assign(out, { missing: loaded.missing, nodeCount: loaded.nodeCount, keys: loaded.keys });
  out.executionIds = { ...loaded.keys }; // the ids the server runs the nodes under
  if (wf.subgraph) {
    // these nodes into one subgraph (the frontend's "Convert to Subgraph"), whose inside the canvas shows
    out.subgraphHost = await page.evaluate((ids) => {
      const app = window.app;
      const { node } = app.graph.convertToSubgraph(new Set(ids.map((id) => app.graph.getNodeById(id))));
      return String(node.id);
    }, wf.subgraph.map((key) => loaded.keys[key]));
    for (const key of wf.subgraph) out.executionIds[key] = `${out.subgraphHost}:${loaded.keys[key]}`;
    out.openPath = [out.subgraphHost];
    if (wf.nested) {
      // some of them once more, into a subgraph inside that subgraph
      out.nestedHost = await page.evaluate(
        ({ outer, ids }) => {
          const sub = window.app.graph.getNodeById(outer).subgraph;
          const { node } = sub.convertToSubgraph(new Set(ids.map((id) => sub.getNodeById(id))));
          return String(node.id);
        },
        { outer: out.subgraphHost, ids: wf.nested.map((key) => loaded.keys[key]) },
      );
      for (const key of wf.nested) {
        out.executionIds[key] = `${out.subgraphHost}:${out.nestedHost}:${loaded.keys[key]}`;
      }
      out.openPath.push(out.nestedHost);
    }
    if (!wf.stayOutside) out.insideKeys = await openSubgraph(page, out.openPath);
  }
  if (wf.save_graph) fs.writeFileSync(wf.save_graph, JSON.stringify(loaded.graph, null, 1));
  await fitView(page);
  out.chartsBefore = await readCharts(page);
  if (wf.prompt) out.apiPrompt = await page.evaluate(async () => (await window.app.graphToPrompt()).output);

  if (wf.queue) {
    await page.evaluate((graphId) => {
      window.__ngDone = null;
      window.__ngEvents = [];
      // the graph node's probe runs when it starts executing: only live events can have filled them
      let node = window.app.graph;
      for (const id of graphId.split(":")) node = (node.subgraph ?? node).getNodeById(id);
      window.__ngGraph = { id: graphId, node, runs: null };
      if (window.__ngListening) return;
      window.__ngListening = true;
      const api = window.app.api;
      const done = (kind) => (e) => (window.__ngDone = window.__ngDone || { kind, detail: e.detail });
      api.addEventListener("execution_success", done("success"));
      api.addEventListener("execution_error", done("error"));
      api.addEventListener("execution_interrupted", done("interrupted"));
      api.addEventListener("executing", (e) => {
        const graph = window.__ngGraph;
        if (graph && String(e.detail) === graph.id && graph.runs == null) {
          graph.runs = (graph.node.properties.normguard_runs ?? []).map((r) => [r.label, r.step.length]);
        }
      });
      for (const type of ["normguard.probe.step", "normguard.probe", "normguard.train"]) {
        api.addEventListener(type, (e) => {
          const { node, label, step, phase } = e.detail;
          window.__ngEvents.push({ type, node, label, step, phase });
        });
      }
    }, out.executionIds.graph);
    const t0 = Date.now();
    const queued = await page.evaluate(async () => {
      const r = await window.app.queuePrompt(0, 1);
      return r === undefined ? true : r;
    });
    out.queued = queued;
    // sample what the charts have drawn while the workflow runs (proves the live updates)
    const timeline = [];
    const deadline = t0 + (wf.timeoutMs || 240000);
    let done = null;
    while (Date.now() < deadline) {
      const charts = await readCharts(page);
      timeline.push({ ms: Date.now() - t0, charts });
      done = await page.evaluate(() => window.__ngDone);
      if (done) break;
      await sleep(150);
    }
    out.runMs = Date.now() - t0;
    out.done = done ? { kind: done.kind, detail: done.kind === "success" ? null : done.detail } : null;
    out.timeline = timeline;
    out.events = await page.evaluate(() => window.__ngEvents);
    out.graphRunsAtExecuting = await page.evaluate(() => window.__ngGraph.runs);
    await page.waitForTimeout(800);
  }
  out.chartsAfter = await readCharts(page);
  for (const shot of wf.shots || []) await screenshot(page, shot, out.keys[shot.node] ?? shot.node);
  if (wf.shot) {
    await fitView(page);
    const jpeg = wf.shot.endsWith(".jpg");
    await page.screenshot({ path: wf.shot, ...(jpeg ? { type: "jpeg", quality: 80, scale: "css" } : {}) });
  }

  // save and reopen: the charts must come back from the node properties
  out.chartsReopened = await page.evaluate(async () => {
    const saved = JSON.parse(JSON.stringify(window.app.graph.serialize()));
    await window.app.loadGraphData(saved, true, false, "normguard-reopened");
    await new Promise((r) => setTimeout(r, 800));
    return null;
  });
  if (out.subgraphHost && !wf.stayOutside) await openSubgraph(page, out.openPath);
  out.chartsReopened = await readCharts(page);
}

/** Opens the template browser on this pack's category (its thumbnails load from workflows/). */
async function templatesDialog(page, file) {
  for (let i = 0; i < 3; i++) await page.keyboard.press("Escape"); // other dialogs, toasts
  await page.evaluate(() => window.app.extensionManager.command.execute("Comfy.BrowseTemplates"));
  await page.waitForTimeout(2500);
  const dialog = page.getByRole("dialog").filter({ hasText: "normguard" }).last();
  await dialog.getByText("normguard", { exact: true }).first().dispatchEvent("click");
  await page.waitForTimeout(2500);
  await page.screenshot({ path: file, type: "jpeg", quality: 80, scale: "css" });
  await page.keyboard.press("Escape");
}

/** Shows the inside of the subgraph reached through the subgraph nodes `path` (from the root graph),
 * one level after the other as a user double-clicks them; returns its node ids. */
async function openSubgraph(page, path) {
  const ids = await page.evaluate((path) => {
    const app = window.app;
    let graph = app.graph;
    for (const id of path) {
      const host = graph.getNodeById(id);
      app.canvas.openSubgraph(host.subgraph, host);
      graph = host.subgraph;
    }
    return graph.nodes.map((n) => String(n.id));
  }, path);
  await fitView(page);
  return ids;
}

async function fitView(page) {
  await page.evaluate(async () => {
    await window.app.extensionManager.command.execute("Comfy.Canvas.FitView");
    window.app.canvas.setDirty(true, true);
  });
  await page.waitForTimeout(800);
}

/** A PNG of one node (`what: "node"`) or of its chart canvas only (`what: "chart"`). */
async function screenshot(page, shot, id) {
  if (shot.zoom) {
    // the node centred in the window at this zoom (less if it would not fit), for a sharp picture
    await page.evaluate(
      ({ id, zoom }) => {
        const app = window.app;
        const node = app.graph.getNodeById(id);
        const title = window.LiteGraph.NODE_TITLE_HEIGHT;
        const vueNode = document.querySelector(`[data-node-id="${id}"]`);
        const ds = app.canvas.ds;
        const [w, h] = vueNode ? [vueNode.offsetWidth, vueNode.offsetHeight] : [node.size[0], node.size[1] + title];
        const scale = Math.min(zoom, (window.innerWidth - 200) / w, (window.innerHeight - 160) / h);
        const area = app.canvas.canvas.getBoundingClientRect();
        ds.scale = scale;
        ds.offset[0] = (window.innerWidth / 2 - area.x) / scale - (node.pos[0] + w / 2);
        ds.offset[1] = (window.innerHeight / 2 + 30 - area.y) / scale - (node.pos[1] - title + h / 2);
        app.canvas.setDirty(true, true);
      },
      { id, zoom: shot.zoom },
    );
    await page.waitForTimeout(800);
  }
  if (shot.what === "chart") {
    await page.locator(`canvas[data-normguard-node="${id}"]`).screenshot({ path: shot.file });
    return;
  }
  const clip = await page.evaluate((id) => {
    const vueNode = document.querySelector(`[data-node-id="${id}"]`);
    if (vueNode) {
      const r = vueNode.getBoundingClientRect();
      return { x: r.x, y: r.y, width: r.width, height: r.height };
    }
    const app = window.app;
    const node = app.graph.getNodeById(id);
    const ds = app.canvas.ds;
    const title = window.LiteGraph.NODE_TITLE_HEIGHT;
    const [x, y] = ds.convertOffsetToCanvas([node.pos[0], node.pos[1] - title]);
    const offset = app.canvas.canvas.getBoundingClientRect();
    return { x: offset.x + x, y: offset.y + y, width: node.size[0] * ds.scale, height: (node.size[1] + title) * ds.scale };
  }, id);
  const pad = 6;
  await page.screenshot({
    path: shot.file,
    clip: { x: clip.x - pad, y: clip.y - pad, width: clip.width + 2 * pad, height: clip.height + 2 * pad },
  });
}

/** For every chart canvas on the page: its node, node type and the points per series it drew. */
async function readCharts(page) {
  return page.evaluate(() => {
    const charts = {};
    for (const canvas of document.querySelectorAll("canvas[data-normguard-node]")) {
      const id = canvas.dataset.normguardNode;
      const node = window.app.canvas.graph.getNodeById(id) ?? window.app.graph.getNodeById(id); // shown graph first
      const rect = canvas.getBoundingClientRect();
      charts[id] = {
        type: node ? node.comfyClass : null,
        drawn: canvas.dataset.drawn ? JSON.parse(canvas.dataset.drawn) : null,
        draws: Number(canvas.dataset.draws || 0),
        width: Math.round(rect.width),
        height: Math.round(rect.height),
        visible: rect.width > 0 && rect.height > 0 && canvas.isConnected,
      };
    }
    return charts;
  });
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack ? e.stack : e));
  process.exit(1);
});
