"""Checks of the ComfyUI backend in-process, run by test_comfyui_backend.py with ComfyUI's python:
  python backend_check.py COMFYUI_PATH MODELS_DIR PACKAGE_PARENT  -> one JSON object on the last line
(PACKAGE_PARENT holds a `normguard` link to this repository.)"""

from __future__ import annotations

import json
import sys


def check_diffusers_layers(kind: str, lora: dict) -> dict:
    """Do the diffusers-format keys name Linear layers of the diffusers transformer of the same
    shape, with fitting lora_A/lora_B shapes? -> {"layers": n, "problems": [...]}"""
    import torch
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    if kind == "sd3":
        model = SD3Transformer2DModel(
            sample_size=32, patch_size=2, in_channels=16, num_layers=2, attention_head_dim=64, num_attention_heads=2,
            joint_attention_dim=4096, caption_projection_dim=128, pooled_projection_dim=2048, out_channels=16,
            pos_embed_max_size=32,
        )  # fmt: skip
    else:
        model = FluxTransformer2DModel(
            patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=128,
            num_attention_heads=1, joint_attention_dim=768, pooled_projection_dim=768, guidance_embeds=True,
            axes_dims_rope=(16, 56, 56),
        )  # fmt: skip
    modules = dict(model.named_modules())
    problems, layers = (
        [],
        sorted(
            {k[len("transformer.") : -len(".lora_A.weight")] for k in lora if k.endswith("lora_A.weight")}
        ),
    )
    for layer in layers:
        m = modules.get(layer)
        a, b = lora[f"transformer.{layer}.lora_A.weight"], lora[f"transformer.{layer}.lora_B.weight"]
        if not isinstance(m, torch.nn.Linear):
            problems.append(f"{layer}: not a Linear of the diffusers model")
        elif (a.shape[1], b.shape[0]) != (m.in_features, m.out_features):
            problems.append(
                f"{layer}: A {tuple(a.shape)} B {tuple(b.shape)} vs {m.in_features}->{m.out_features}"
            )
    model.load_lora_adapter(
        {k: v.clone() for k, v in lora.items()}, prefix="transformer", adapter_name="normguard"
    )
    adapted = sorted(n[: -len(".lora_A")] for n, m in model.named_modules() if n.endswith(".lora_A"))
    if adapted != layers:
        problems.append(f"diffusers adapted {len(adapted)} layers, the file names {len(layers)}")
    return {"layers": len(layers), "problems": problems, "keys": len(lora)}


def main(comfy_dir: str, models: str, package_parent: str) -> dict:
    sys.path[:0] = [comfy_dir, package_parent]
    import torch
    from comfy.cli_args import args

    args.cpu = True
    import comfy.model_management
    import comfy.sd
    import comfy.utils

    from normguard.trainer.backends.comfy import ComfyBackend

    results: dict = {}
    with torch.inference_mode():  # as ComfyUI runs every node
        vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(f"{models}/vae/tiny_vae16.safetensors"))
        kits = {
            "sd3": (
                comfy.sd.load_diffusion_model(f"{models}/diffusion_models/tiny_sd3.safetensors"),
                comfy.sd.load_clip(
                    [f"{models}/text_encoders/tiny_clip_l.safetensors"], clip_type=comfy.sd.CLIPType.SD3
                ),
            ),
            "flux": (
                comfy.sd.load_diffusion_model(f"{models}/diffusion_models/tiny_flux.safetensors"),
                comfy.sd.load_clip(
                    [f"{models}/text_encoders/tiny_clip_l.safetensors"],
                    clip_type=comfy.sd.CLIPType.STABLE_DIFFUSION,
                ),
            ),
        }

    def run(kind: str, checkpointing: bool) -> dict:
        model, clip = kits[kind]
        comfy.model_management.unload_all_models()  # the base weights, unpatched by earlier checks
        params_before = {n: p for n, p in model.model.diffusion_model.named_parameters()}
        sums_before = sum(float(p.double().sum()) for p in params_before.values())
        out: dict = {}
        with torch.inference_mode(False), torch.enable_grad():
            b = ComfyBackend(
                model,
                clip,
                vae,
                height=64,
                width=64,
                prompts=["a", "b"],
                gradient_checkpointing=checkpointing,
            )
            torch.manual_seed(0)
            b.add_lora(4)
            with torch.no_grad():  # a LoRA with a clear effect, so finite differences resolve it in fp32
                for name, p in b.named_trainable().items():
                    p.normal_(
                        0,
                        0.5 if name.endswith("lora_up") else 0.1,
                        generator=torch.Generator().manual_seed(2),
                    )
            g = torch.Generator().manual_seed(1)
            x = torch.randn(2, 16, 8, 8, generator=g)
            sigma = torch.tensor([0.7, 0.3])
            cond = b.encode_prompts(["a", "b"])
            probe = torch.randn(2, 16, 8, 8, generator=g)
            params = b.named_trainable()

            def loss() -> torch.Tensor:
                return (b.velocity(x, sigma, cond) * probe).sum()

            loss().backward()
            grads = {k: p.grad.clone() for k, p in params.items()}
            direction = {
                k: torch.randn(p.shape, generator=g) * p.detach().abs().mean() for k, p in params.items()
            }
            eps = 1e-2
            with torch.no_grad():
                for k, p in params.items():
                    p.add_(eps * direction[k])
                plus = float(loss())
                for k, p in params.items():
                    p.sub_(2 * eps * direction[k])
                minus = float(loss())
                for k, p in params.items():
                    p.add_(eps * direction[k])
                out["fd"] = (plus - minus) / (2 * eps)
                out["analytic"] = sum(float((grads[k] * direction[k]).sum()) for k in grads)
                out["grads"] = {k: v.tolist() for k, v in list(grads.items())[:2]}
                policy = b.velocity(x, sigma, cond)
                with b.reference():
                    reference = b.velocity(x, sigma, cond)
                lora = b.lora_state_dict()
                b.lora_format = "diffusers"
                lora_diffusers = b.lora_state_dict()
                b.release()
        # the shared MODEL after training: no patched forward left, the same parameter objects and values
        out["forward_patches_left"] = [
            n for n, m in model.model.diffusion_model.named_modules() if "forward" in m.__dict__
        ]
        params_after = dict(model.model.diffusion_model.named_parameters())
        out["params_same_objects"] = all(params_after[n] is p for n, p in params_before.items())
        out["weights_unchanged"] = sum(float(p.double().sum()) for p in params_after.values()) == sums_before
        with torch.inference_mode(False), torch.no_grad():  # continuing from either file: the same adapter
            again = ComfyBackend(model, clip, vae, height=64, width=64, prompts=["a", "b"])
            again.add_lora(4)
            again.load_lora_state_dict(lora)
            out["reload_comfyui"] = float((again.velocity(x, sigma, cond) - policy).abs().max())
            again.load_lora_state_dict(lora_diffusers)
            out["reload_diffusers"] = float((again.velocity(x, sigma, cond) - policy).abs().max())
            again.release()
        with torch.no_grad():
            plain = ComfyBackend(model, clip, vae, height=64, width=64, prompts=["a", "b"])
            base = plain.velocity(x, sigma, cond)
            merged_patcher, _ = comfy.sd.load_lora_for_models(model, None, lora, 1.0, 0.0)
            merged = ComfyBackend(merged_patcher, clip, vae, height=64, width=64, prompts=["a", "b"])
            merged_v = merged.velocity(x, sigma, cond)
            as_diffusers, _ = comfy.sd.load_lora_for_models(model, None, lora_diffusers, 1.0, 0.0)
            diffusers_v = ComfyBackend(
                as_diffusers, clip, vae, height=64, width=64, prompts=["a", "b"]
            ).velocity(x, sigma, cond)
        out["diffusers_export_matches_policy"] = float((diffusers_v - policy).abs().max())
        out["diffusers_layers"] = check_diffusers_layers(kind, lora_diffusers)
        out["reference_equals_base"] = bool(torch.equal(reference, base))
        out["export_matches_policy"] = float((merged_v - policy).abs().max())
        out["policy_differs"] = float((policy - base).abs().max())
        return out

    results["sd3"] = run("sd3", checkpointing=False)
    results["sd3_checkpointed"] = run("sd3", checkpointing=True)
    results["flux"] = run("flux", checkpointing=False)  # FLUX is always checkpointed (in-place residuals)
    return results


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])))
