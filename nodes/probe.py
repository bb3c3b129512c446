"""NormGuardVelocityNormProbe (records ||v|| per sampler step) and NormGuardVelocityNormGraph (draws the
records); saved workflows with their old ids VelocityNormProbe / VelocityNormGraph load through aliases.py.

The probe returns a clone of the MODEL with three hooks: an OUTER_SAMPLE wrapper (once per sampling
run: resets the log, wraps the per-step callback that marks step boundaries, finalises the log),
and a post-CFG function (once per model evaluation: norms of the guided, cond and uncond
velocities, and with a reference MODEL the reference's guided velocity at the same x, sigma, conds
and cfg, optionally rescaling v to ||v_ref||).

The reference pass: when the reference has its own weights (a different nn.Module), it is loaded
beside the model (an additional model of the clone) and evaluated through ComfyUI's own
sampling_function. When model and reference share the nn.Module (the usual case: the model is
the reference plus LoRAs, e.g. the trainer's output), the clone carries the reference's weight
patches and the model's extra patches become bypass forward patches that a switch turns off for
the reference pass: no second copy and no per-step re-patching.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from comfy_api.latest import io, ui

from ..trainer.backends.comfy import ForwardPatch, Switch, check_flow_model, patcher_injection
from .messages import send_event
from .probe_log import ProbeLog
from .types import ProbeLogType

EVENT = "normguard.probe"
STEP_EVENT = "normguard.probe.step"
WRAPPER_KEY = "normguard_probe"


class VelocityProbe:
    """The hooks of one probed MODEL; `log` holds the latest run's records."""

    def __init__(
        self, log: ProbeLog, reference: Any = None, switch: Switch | None = None, rescale: bool = False
    ):
        self.log, self.reference, self.switch, self.rescale = log, reference, switch, rescale

    # OUTER_SAMPLE wrapper: (noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed)
    def outer_sample(self, executor: Any, *args: Any, **kwargs: Any) -> Any:
        args = list(args)
        original = args[5] if len(args) > 5 else kwargs.get("callback")

        def callback(step: int, x0: Any, x: Any, total_steps: int) -> Any:
            self.log.end_step(step)
            point = self.log.last_step()
            if point is not None:  # a live chart point (the full run follows in EVENT)
                send_event(
                    STEP_EVENT,
                    {"node": self.log.node, "label": self.log.label, "steps": total_steps, **point},
                )
            return original(step, x0, x, total_steps) if original is not None else None

        if len(args) > 5:
            args[5] = callback
        else:
            kwargs["callback"] = callback
        self.log.start_run()
        if self.reference is not None:  # loaded beside the model as an additional model; in use for this run
            self.reference.pre_run()
        try:
            return executor(*args, **kwargs)
        finally:
            if self.reference is not None:
                self.reference.cleanup()
            self.log.finish_run()
            send_event(EVENT, self.log.series())

    # post-CFG function: once per model evaluation
    def __call__(self, args: dict[str, Any]) -> torch.Tensor:
        x, denoised, sigma = args["input"], args["denoised"], args["sigma"]
        dims = tuple(range(1, x.ndim))
        s = sigma.to(x.device, torch.float32).reshape(-1)

        def norm(d: torch.Tensor) -> torch.Tensor:
            return torch.linalg.vector_norm((x - d).float(), dim=dims)

        diff = norm(denoised)
        norms = {"norm": diff / s, "norm_cond": norm(args["cond_denoised"]) / s}
        if args.get("uncond") is not None:  # None at cfg 1 (ComfyUI then skips the uncond pass)
            norms["norm_uncond"] = norm(args["uncond_denoised"]) / s
        if self.reference is not None or self.switch is not None:
            ref_diff = norm(self._reference_denoised(args))
            norms["norm_ref"] = ref_diff / s
            if self.rescale:  # v -> v * ||v_ref|| / ||v||; since v = (x - d) / sigma, sigma cancels
                k = (ref_diff / diff.clamp_min(1e-12)).to(x.dtype).view(-1, *([1] * (x.ndim - 1)))
                denoised = x - (x - denoised) * k
        self.log.add_eval(s, norms)
        return denoised

    def _reference_denoised(self, args: dict[str, Any]) -> torch.Tensor:
        """The reference's guided denoised at the same x, sigma, conds and cfg (ComfyUI's own
        sampling_function, with every other CFG hook of the run, without this probe)."""
        import comfy.samplers

        options = dict(args["model_options"])
        options["sampler_post_cfg_function"] = [
            f for f in options.get("sampler_post_cfg_function", []) if f is not self
        ]
        model = self.reference.model if self.reference is not None else args["model"]
        with self.switch.off() if self.switch is not None else nullcontext():
            return comfy.samplers.sampling_function(
                model, args["input"], args["sigma"], args["uncond"], args["cond"], args["cond_scale"], options
            )


# --- the reference path ---------------------------------------------------------------------------


def extra_patches(model: Any, reference: Any) -> dict[str, list]:
    """The weight patches `model` adds on top of `reference` (which must be its ancestor)."""
    extra = {}
    for key in set(model.patches) | set(reference.patches):
        mine, base = model.patches.get(key, []), reference.patches.get(key, [])
        if len(mine) < len(base) or any(a is not b for a, b in zip(mine, base, strict=False)):
            raise ValueError(
                "NormGuardVelocityNormProbe: the model and the reference share weights, but the model is not the "
                f"reference plus LoRAs (they differ in how {key} is patched). Connect as reference the MODEL "
                "the model was derived from (e.g. the loader's output before the LoRA loaders)."
            )
        if len(mine) > len(base):
            extra[key] = mine[len(base) :]
    return extra


def _lowrank(entry: tuple) -> tuple[torch.Tensor, torch.Tensor, float, tuple | None] | None:
    """(down, up, scale, offset) when a patch is a plain LoRA that can run as y += s up(down(x))."""
    from comfy.weight_adapter import LoRAAdapter

    strength, adapter, strength_model, offset, function = entry
    if not isinstance(adapter, LoRAAdapter) or function is not None or strength_model != 1.0:
        return None
    up, down, alpha, mid, dora, reshape = adapter.weights
    if mid is not None or dora is not None or reshape is not None or up.ndim != 2 or down.ndim != 2:
        return None
    if offset is not None and offset[0] != 0:
        return None
    scale = strength * (float(alpha) / down.shape[0] if alpha is not None else 1.0)
    return down, up, scale, offset


class PatchDelta:
    """What a layer's extra weight patches add to its output, as a function of its input."""

    def __init__(self, module: torch.nn.Module, key: str, entries: list):
        self.module, self.key, self.entries = module, key, entries
        self.bias = key.endswith(".bias")
        self.lowrank = [] if self.bias else [_lowrank(e) for e in entries]
        self._cache: dict[tuple, list] = {}

    def _prepared(self, device: torch.device, dtype: torch.dtype) -> list:
        cache_key = (device, dtype)
        if cache_key not in self._cache:
            import comfy.lora

            parts = []
            dense = [
                e
                for e, lr in zip(self.entries, self.lowrank or [None] * len(self.entries), strict=True)
                if lr is None
            ]
            for lr in self.lowrank:
                if lr is not None:
                    down, up, scale, offset = lr
                    parts.append(
                        ("lowrank", down.to(device, dtype), (up.float() * scale).to(device, dtype), offset)
                    )
            if dense:  # any other patch: its exact dense weight difference (memory of that layer)
                name = "bias" if self.bias else "weight"
                base = getattr(self.module, name).detach().float().to(device).clone()
                patched = comfy.lora.calculate_weight(
                    dense, base.clone(), self.key, intermediate_dtype=torch.float32
                )
                parts.append(("dense", (patched - base).to(dtype), None, None))
            self._cache = {cache_key: parts}
        return self._cache[cache_key]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out_features = self.module.weight.shape[0]
        total = None
        for kind, a, b, offset in self._prepared(x.device, x.dtype):
            if kind == "dense" and self.bias:
                h = a.expand(*x.shape[:-1], out_features)
            elif kind == "dense":
                h = F.linear(x, a)
            else:
                h = F.linear(F.linear(x, a), b)
                if offset is not None:
                    h = F.pad(h, (offset[1], out_features - offset[1] - offset[2]))
            total = h if total is None else total + h
        return total


def delta_patches(model: Any, extra: dict[str, list], switch: Switch) -> list[ForwardPatch]:
    modules = dict(model.model.named_modules())
    patches = []
    for key, entries in sorted(extra.items()):
        path, _, param = key.rpartition(".")
        module = modules.get(path)
        weight = getattr(module, "weight", None)
        if module is None or param not in ("weight", "bias") or weight is None or weight.ndim != 2:
            raise ValueError(
                f"NormGuardVelocityNormProbe: the model's patch on {key} is not on a Linear layer, so it cannot be "
                "switched off for the reference pass; load the reference from its own file instead"
            )
        patches.append(ForwardPatch(module, PatchDelta(module, key, entries), switch))
    return patches


def probed_model(model: Any, reference: Any | None, log: ProbeLog, rescale: bool) -> Any:
    """A clone of `model` that records into `log` (see the module docstring)."""
    import comfy.patcher_extension

    check_flow_model(model, "NormGuardVelocityNormProbe")
    if rescale and reference is None:
        raise ValueError(
            "NormGuardVelocityNormProbe: rescale needs a reference MODEL (v is rescaled to ||v_ref||)"
        )
    m = model.clone()
    switch, ref = None, None
    if reference is not None:
        check_flow_model(reference, "NormGuardVelocityNormProbe (reference)")
        if type(reference.model) is not type(model.model):
            raise ValueError(
                f"NormGuardVelocityNormProbe: the reference is a {type(reference.model).__name__} but the model is a "
                f"{type(model.model).__name__}; the reference must be the same architecture"
            )
        if reference.model is model.model:  # shared weights: reference patches + switchable extras
            extra = extra_patches(model, reference)
            switch = Switch()
            if extra:
                m.patches = {k: list(v) for k, v in reference.patches.items()}
                m.patches_uuid = reference.patches_uuid
                m.set_injections(WRAPPER_KEY, [patcher_injection(delta_patches(model, extra, switch))])
        else:  # its own weights: loaded beside the model by the sampler
            ref = reference
            m.set_additional_models(WRAPPER_KEY, [reference])
    probe = VelocityProbe(log, ref, switch, rescale)
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, probe.outer_sample)
    m.set_model_sampler_post_cfg_function(probe, disable_cfg1_optimization=False)
    return m


# --- nodes --------------------------------------------------------------------------------------------


class VelocityNormProbe(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NormGuardVelocityNormProbe",
            display_name="NormGuard Velocity Norm Probe",
            category="NormGuard",
            search_aliases=["velocity norm", "probe", "rho", "norm inflation", "VelocityNormProbe"],
            description=(
                "Records the velocity norm ||v|| of every sampler step (guided, cond and uncond), and with a "
                "reference MODEL also ||v_ref|| and the ratio ||v||/||v_ref||. Connect its MODEL to a KSampler "
                "and its log (with the sampler's LATENT) to a Velocity Norm Graph."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The model to observe (e.g. with a trained LoRA)."),
                io.Model.Input(
                    "reference",
                    optional=True,
                    tooltip="The base model, evaluated at the same x, sigma, prompts and cfg at every step.",
                ),
                io.Boolean.Input(
                    "rescale",
                    default=False,
                    tooltip="Rescale v to ||v_ref|| at every step (the inference-time baseline; needs a reference).",
                ),
                io.String.Input("label", default="", tooltip="Name of this curve in the graph."),
            ],
            outputs=[io.Model.Output(display_name="MODEL"), ProbeLogType.Output(display_name="probe_log")],
            hidden=[io.Hidden.unique_id],
            # its log names this node, so its cached output must not serve another node (ComfyUI keys
            # the cache by node id for a V1 node's hidden UNIQUE_ID, but not for a V3 node's; this flag does)
            not_idempotent=True,
        )

    @classmethod
    def execute(cls, model, rescale=False, label="", reference=None) -> io.NodeOutput:
        label = label.strip() or ("rescaled" if rescale else "model")
        log = ProbeLog(label, reference is not None, rescale, node=cls.hidden.unique_id)
        return io.NodeOutput(probed_model(model, reference, log, rescale), log)


class VelocityNormGraph(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NormGuardVelocityNormGraph",
            display_name="NormGuard Velocity Norm Graph",
            category="NormGuard",
            search_aliases=["velocity norm", "chart", "rho", "VelocityNormGraph"],
            description=(
                "Draws probe logs: ||v|| per step (dashed: ||v_ref||) and the ratio ||v||/||v_ref||. The LATENT "
                "inputs only order this node after the samplers (connect each extra log's sampler output too)."
            ),
            inputs=[
                io.Latent.Input(
                    "samples", tooltip="The sampler's output, so the graph is drawn after sampling."
                ),
                ProbeLogType.Input("probe_log"),
                ProbeLogType.Input("probe_log_2", optional=True),
                ProbeLogType.Input("probe_log_3", optional=True),
                ProbeLogType.Input("probe_log_4", optional=True),
                *(
                    io.Latent.Input(
                        f"samples_{i}",
                        optional=True,
                        tooltip=f"The sampler output that probe_log_{i} observed.",
                    )
                    for i in (2, 3, 4)
                ),
            ],
            outputs=[io.Image.Output(display_name="IMAGE")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, samples, probe_log, probe_log_2=None, probe_log_3=None, probe_log_4=None, **samples_n):
        from ..trainer.plots import probe_chart

        logs = [lg for lg in (probe_log, probe_log_2, probe_log_3, probe_log_4) if lg is not None]
        for lg in logs:
            if not lg.records:
                raise ValueError(
                    f"NormGuardVelocityNormGraph: probe log {lg.label!r} has no records; connect the LATENT of the sampler "
                    "that used the probe's MODEL, so it runs first"
                )
        series = [lg.series() for lg in logs]
        chart = probe_chart(series)
        image = torch.from_numpy(chart).float().div(255).unsqueeze(0)
        preview = ui.PreviewImage(image, cls=cls).as_dict()
        return io.NodeOutput(image, ui={**preview, "normguard_probe": series})
