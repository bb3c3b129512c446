// node --test web/tests  (execution-id resolution of web/graphwalk.js on stand-in graphs)
import assert from "node:assert/strict";
import { test } from "node:test";

import { allNodes, inputsFedBy, nodeByExecutionId } from "../graphwalk.js";

/** A stand-in LGraph: nodes by id (string keys, as LiteGraph's toNodeId makes them). */
function graph(nodes) {
  const byId = Object.fromEntries(nodes.map((n) => [String(n.id), n]));
  return { _nodes: nodes, getNodeById: (id) => byId[String(id)] ?? null };
}
const plain = (id, type = "Plain") => ({ id, type, isSubgraphNode: () => false });
const host = (id, subgraph) => ({ id, type: "subgraph", subgraph, isSubgraphNode: () => true });

// root: 1, 2, 12 -> [5, 7, 3 -> [5, 9]]; 13 is a second instance of 12's subgraph
const deep = graph([plain(5, "deep5"), plain(9, "deep9")]);
const inner = graph([plain(5, "inner5"), plain(7, "inner7"), host(3, deep)]);
const root = graph([plain(1, "root1"), plain(2, "root2"), host(12, inner), host(13, inner)]);

test("a root-graph id resolves as getNodeById does", () => {
  assert.equal(nodeByExecutionId(root, "1").type, "root1");
  assert.equal(nodeByExecutionId(root, 2).type, "root2");
  assert.equal(nodeByExecutionId(root, "12").type, "subgraph");
});

test("an execution id walks the subgraph nodes along its path", () => {
  assert.equal(nodeByExecutionId(root, "12:5").type, "inner5");
  assert.equal(nodeByExecutionId(root, "12:7").type, "inner7");
  assert.equal(nodeByExecutionId(root, "13:7").type, "inner7"); // instances share the definition
  assert.equal(nodeByExecutionId(root, "12:3:5").type, "deep5");
  assert.equal(nodeByExecutionId(root, "12:3:9").type, "deep9");
});

test("ids that name no node resolve to null", () => {
  for (const id of ["99", "12:99", "1:5", "99:5", "12:3:7", "12:5:1", "", ":", null, undefined]) {
    assert.equal(nodeByExecutionId(root, id), null, String(id));
  }
  assert.equal(nodeByExecutionId(null, "1"), null);
});

test("allNodes lists the root's nodes and each subgraph definition's once", () => {
  assert.deepEqual(
    allNodes(root).map((n) => n.type),
    ["root1", "root2", "subgraph", "inner5", "inner7", "subgraph", "deep5", "deep9", "subgraph"],
  );
  assert.deepEqual(allNodes(null), []);
  assert.deepEqual(allNodes(graph([])), []);
});

/** Stand-in graphs with LiteGraph's link model: graph.links (a Map), node.outputs[i].links,
 *  node.inputs[i], subgraph.inputs[i].linkIds; a subgraph's output node has id -20, its input -10. */
function wired(nodes, links, inputs = []) {
  const g = graph(nodes);
  g.links = new Map();
  g.inputs = inputs.map(() => ({ linkIds: [] }));
  for (const [id, from, fromSlot, to, toSlot] of links) {
    g.links.set(id, { id, origin_id: from, origin_slot: fromSlot, target_id: to, target_slot: toSlot });
    if (from === -10) g.inputs[fromSlot].linkIds.push(id);
    else (g.getNodeById(from).outputs[fromSlot].links ??= []).push(id);
  }
  for (const n of nodes) n.graph = g;
  return g;
}
const ioNode = (id, type, inputs, outputs) => ({
  id,
  type,
  isSubgraphNode: () => false,
  inputs: inputs.map((name) => ({ name })),
  outputs: outputs.map((name) => ({ name, links: [] })),
});
const instance = (id, subgraph, inputs, outputs) => ({
  ...ioNode(id, "subgraph", inputs, outputs),
  subgraph,
  isSubgraphNode: () => true,
});
const fed = (root, id) => inputsFedBy(root, id).map(({ node, input }) => `${node.type}.${input.name}`);

test("inputsFedBy follows a node's output links in its own graph", () => {
  const probe = ioNode(1, "probe", [], ["model", "log"]);
  const root = wired(
    [probe, ioNode(2, "sampler", ["model"], []), ioNode(3, "chart", ["log", "log_2"], [])],
    [[10, 1, 0, 2, 0], [11, 1, 1, 3, 1]],
  );
  assert.deepEqual(fed(root, "1"), ["sampler.model", "chart.log_2"]);
  assert.deepEqual(fed(root, "2"), []);
  assert.deepEqual(fed(root, "9"), []);
  assert.deepEqual(fed(null, "1"), []);
});

test("inputsFedBy leaves a subgraph through the instance its execution id names", () => {
  // root: subgraph nodes 7 and 8 share one definition: probe 1 -> its output 0 (-20) ; 7.out0 -> chart 3
  const probe = ioNode(1, "probe", [], ["model", "log"]);
  const inner = wired([probe, ioNode(2, "sampler", ["model"], [])], [[20, 1, 0, 2, 0], [21, 1, 1, -20, 0]]);
  const a = instance(7, inner, [], ["log"]);
  const b = instance(8, inner, [], ["log"]);
  const root = wired([a, b, ioNode(3, "chart", ["log"], []), ioNode(4, "other", ["log"], [])], [
    [30, 7, 0, 3, 0],
    [31, 8, 0, 4, 0],
  ]);
  assert.deepEqual(fed(root, "7:1"), ["sampler.model", "chart.log"]);
  assert.deepEqual(fed(root, "8:1"), ["sampler.model", "other.log"]);
});

test("inputsFedBy enters subgraph nodes, nested ones too", () => {
  // root: probe 1 -> subgraph node 5 input 0 -> (inside) chart 2 and subgraph node 6 input 0 -> chart 3
  const deep = wired([ioNode(3, "deepchart", ["log"], [])], [[40, -10, 0, 3, 0]], ["log"]);
  const inner = wired(
    [ioNode(2, "chart", ["samples", "log"], []), instance(6, deep, ["log"], [])],
    [[50, -10, 0, 2, 1], [51, -10, 0, 6, 0]],
    ["log"],
  );
  const root = wired([ioNode(1, "probe", [], ["log"]), instance(5, inner, ["log"], [])], [[60, 1, 0, 5, 0]]);
  assert.deepEqual(fed(root, "1"), ["chart.log", "deepchart.log"]);
});
