"""ComfyUI UI-format workflows (what the frontend saves) checked against /object_info and converted to
the API format that POST /prompt takes. ComfyUI has no server-side converter; this one follows the
frontend's rules:

- widget inputs (INT, FLOAT, STRING, BOOLEAN, combos) hold one entry each in `widgets_values`, in the
  node definition's input order, also when a link feeds the input;
- a seed widget (control_after_generate in the definition, or named seed/noise_seed, which the
  frontend treats alike) is followed by its "control after generate" entry, which the API omits;
- frontend-only nodes (notes) are dropped; a link [id, origin, slot, target, input slot, type] becomes
  [str(origin), slot] on the target's input of that name.
"""

from __future__ import annotations

from typing import Any

FRONTEND_ONLY = {"Note", "MarkdownNote"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SEED_NAMES = {"seed", "noise_seed"}


def input_specs(info: dict[str, Any]) -> list[tuple[str, Any, dict]]:
    """(name, type, options) of a node definition's inputs, required then optional."""
    specs = []
    for group in ("required", "optional"):
        section = info["input"].get(group, {})
        for name in info.get("input_order", {}).get(group, list(section)):
            spec = section[name]
            specs.append((name, spec[0], spec[1] if len(spec) > 1 else {}))
    return specs


def is_widget(type_: Any) -> bool:
    return isinstance(type_, list) or type_ in WIDGET_TYPES


def has_control_value(name: str, type_: Any, options: dict) -> bool:
    return type_ == "INT" and (bool(options.get("control_after_generate")) or name in SEED_NAMES)


def widget_values(node: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """{input name: value} of a node's widgets, read positionally from widgets_values."""
    values = list(node.get("widgets_values") or [])
    out, i = {}, 0
    for name, type_, options in input_specs(info):
        if not is_widget(type_):
            continue
        if i >= len(values):
            raise ValueError(f"node {node['id']} ({node['type']}): no widget value for {name!r}")
        out[name] = values[i]
        i += 2 if has_control_value(name, type_, options) else 1
    if i != len(values):
        raise ValueError(f"node {node['id']} ({node['type']}): {len(values)} widget values, expected {i}")
    return out


def problems(workflow: dict[str, Any], object_info: dict[str, Any]) -> list[str]:
    """Everything in a workflow that the server would not accept: unknown node types, links between
    sockets of different types or to inputs/outputs a node does not have, widget values that do not
    line up with the node's inputs (checked against widgets_values_named where the frontend wrote it)."""
    found = []
    nodes = {n["id"]: n for n in workflow["nodes"]}
    for n in workflow["nodes"]:
        if n["type"] in FRONTEND_ONLY:
            continue
        info = object_info.get(n["type"])
        if info is None:
            found.append(f"node {n['id']}: unknown type {n['type']}")
            continue
        try:
            values = widget_values(n, info)
        except ValueError as e:
            found.append(str(e))
            continue
        named = n.get("widgets_values_named")
        if named is not None and any(named.get(k, v) != v for k, v in values.items()):
            found.append(f"node {n['id']} ({n['type']}): widget values out of order: {values} vs {named}")
    for link_id, origin, slot, target, target_slot, type_ in workflow["links"]:
        src, dst = nodes.get(origin), nodes.get(target)
        if src is None or dst is None:
            found.append(f"link {link_id}: node {origin if src is None else target} does not exist")
            continue
        src_info, dst_info = object_info.get(src["type"]), object_info.get(dst["type"])
        if src_info is None or dst_info is None:
            continue  # reported above
        outputs = src_info["output"]
        if slot >= len(outputs) or outputs[slot] != type_:
            found.append(f"link {link_id}: {src['type']} output {slot} is not {type_}")
        name = dst["inputs"][target_slot]["name"]
        spec = {n_: t for n_, t, _ in input_specs(dst_info)}
        if name not in spec:
            found.append(f"link {link_id}: {dst['type']} has no input {name!r}")
        elif spec[name] != type_ and spec[name] != "*":
            found.append(f"link {link_id}: {dst['type']}.{name} takes {spec[name]}, the link carries {type_}")
    return found


def to_api(workflow: dict[str, Any], object_info: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The API-format prompt of a UI-format workflow (see the module docstring)."""
    bad = problems(workflow, object_info)
    if bad:
        raise ValueError("workflow does not match the server's nodes:\n" + "\n".join(bad))
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for n in workflow["nodes"]:
        if n["type"] in FRONTEND_ONLY:
            continue
        if n.get("mode", 0) != 0:
            raise ValueError(
                f"node {n['id']} ({n['type']}) is muted or bypassed; the examples run every node"
            )
        inputs: dict[str, Any] = widget_values(n, object_info[n["type"]])
        for slot in n.get("inputs") or []:
            if slot.get("link") is not None:
                _, origin, origin_slot, *_ = links[slot["link"]]
                inputs[slot["name"]] = [str(origin), origin_slot]
        prompt[str(n["id"])] = {"class_type": n["type"], "inputs": inputs}
    return prompt
