// node --test web/tests  (execution-id resolution of web/graphwalk.js on stand-in graphs)
import assert from "node:assert/strict";
import { test } from "node:test";

import { allNodes, nodeByExecutionId } from "../graphwalk.js";

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
