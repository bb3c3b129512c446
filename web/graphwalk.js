// Finding nodes from the ids the server sends. A node inside a subgraph runs under an execution id,
// the path of subgraph-node ids down to it: "12:5" is node 5 of the subgraph that node 12 of the
// root graph instantiates (deeper nesting adds segments). The frontend resolves these with its own
// getNodeByExecutionId (src/utils/graphTraversalUtil.ts), which extensions cannot import, so this
// walks `node.subgraph` per segment the same way. No DOM here: `node --test web/tests` checks it.

/** The node execution id `id` names under `root` (a root graph), or null. */
export function nodeByExecutionId(root, id) {
  if (!root || id == null) return null;
  const path = String(id)
    .split(":")
    .filter((segment) => segment.length > 0);
  if (!path.length) return null;
  let graph = root;
  for (const segment of path.slice(0, -1)) {
    const host = graph.getNodeById(segment);
    if (!host?.isSubgraphNode?.() || !host.subgraph) return null;
    graph = host.subgraph;
  }
  return graph.getNodeById(path[path.length - 1]) ?? null;
}

/** Every node of `root` and of the subgraphs inside it (each subgraph definition once). */
export function allNodes(root) {
  const nodes = [];
  const seen = new Set();
  const visit = (graph) => {
    if (!graph || seen.has(graph)) return;
    seen.add(graph);
    for (const node of graph._nodes ?? graph.nodes ?? []) {
      nodes.push(node);
      if (node.isSubgraphNode?.()) visit(node.subgraph);
    }
  };
  visit(root);
  return nodes;
}
