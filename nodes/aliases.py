"""Node ids the pack used before they took its prefix: workflows saved with them still load and run.

ComfyUI's node replacement (comfy_api NodeReplace) would swap them, but 0.33.0's server-side swap
reads every mapped input and fails on an unconnected optional one (a probe without a reference), so
each old id stays registered as a deprecated copy of the new node: same inputs, outputs and code,
hidden from search by the frontend's default "show deprecated nodes: off".
"""

from __future__ import annotations

import dataclasses

from comfy_api.latest import io

from .probe import VelocityNormGraph, VelocityNormProbe

RENAMED = {"VelocityNormProbe": VelocityNormProbe, "VelocityNormGraph": VelocityNormGraph}


def old_id_node(old_id: str, node: type[io.ComfyNode]) -> type[io.ComfyNode]:
    """A deprecated node registered under `old_id` that behaves exactly as `node`."""

    def define_schema(cls) -> io.Schema:
        schema = node.define_schema()
        return dataclasses.replace(
            schema,
            node_id=old_id,
            display_name=f"{schema.display_name} (old id {old_id})",
            is_deprecated=True,
            search_aliases=[],
            description=f"Renamed to {schema.node_id}; kept so that saved workflows load. {schema.description}",
        )

    return type(old_id, (node,), {"define_schema": classmethod(define_schema)})


def old_id_nodes() -> list[type[io.ComfyNode]]:
    return [old_id_node(old, node) for old, node in RENAMED.items()]
