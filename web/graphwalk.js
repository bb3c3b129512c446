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

const SUBGRAPH_OUTPUT = "-20"; // the node id LiteGraph gives a subgraph's output node inside it

/** The node inputs that the outputs of the node at execution id `id` feed, followed through
 *  subgraph boundaries: into a subgraph node's inside (its subgraph input's links), and out of the
 *  subgraph this node sits in (the instantiating node's output links, `id` says which instance). */
export function inputsFedBy(root, id) {
  if (!root || id == null) return [];
  const path = String(id)
    .split(":")
    .filter((segment) => segment.length > 0);
  if (!path.length) return [];
  const hosts = []; // the subgraph nodes down to the node
  let graph = root;
  for (const segment of path.slice(0, -1)) {
    const host = graph.getNodeById(segment);
    if (!host?.isSubgraphNode?.() || !host.subgraph) return [];
    hosts.push(host);
    graph = host.subgraph;
  }
  const node = graph.getNodeById(path[path.length - 1]);
  const found = [];
  const seen = new Set();
  const follow = (graph, hosts, linkIds) => {
    for (const linkId of linkIds ?? []) {
      const link = graph.links instanceof Map ? graph.links.get(linkId) : graph.links?.[linkId];
      if (!link || seen.has(link)) continue;
      seen.add(link);
      if (String(link.target_id) === SUBGRAPH_OUTPUT) {
        const host = hosts[hosts.length - 1];
        if (host?.graph) follow(host.graph, hosts.slice(0, -1), host.outputs?.[link.target_slot]?.links);
        continue;
      }
      const target = graph.getNodeById(link.target_id);
      if (target?.isSubgraphNode?.() && target.subgraph) {
        follow(target.subgraph, [...hosts, target], target.subgraph.inputs?.[link.target_slot]?.linkIds);
      } else if (target?.inputs?.[link.target_slot]) {
        found.push({ node: target, input: target.inputs[link.target_slot] });
      }
    }
  };
  for (const output of node?.outputs ?? []) follow(graph, hosts, output.links);
  return found;
}
