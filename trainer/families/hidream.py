"""HiDream-I1 (sparse MoE DiT; two CLIPs give the pooled vector, T5 and Llama-3.1 layers the text)."""

from __future__ import annotations

import torch

from .base import DiffusersAdapter, Family, calculate_shift

FAMILY = Family(
    name="hidream",
    title="HiDream-I1",
    pipelines=("HiDreamImagePipeline",),
    comfy_models=("HiDream",),
    lora_targets=("to_q", "to_k", "to_v", "to_out"),
    targets_from="diffusers train_dreambooth_lora_hidream.py",
    # ComfyUI names HiDream's attention projections as diffusers does (the text stream's end in _t)
    comfy_targets=("to_q", "to_k", "to_v", "to_out"),
    notes="Llama-3 hidden states of every layer reach the transformer (stored batch-first here)",
)


class Adapter(DiffusersAdapter):
    family = FAMILY
    max_sequence_length = 128

    def encode_prompts(self, prompts, device):
        t5, _, llama, _, pooled, _ = self.pipeline_prompts(
            prompts, device, prompt_2=None, prompt_3=None, prompt_4=None
        )
        # llama is [layers, B, L, D]: batch-first for the core's slicing, back in predict
        return {"prompt_embeds_t5": t5, "prompt_embeds_llama3": llama.transpose(0, 1), "pooled": pooled}

    def predict(self, module, x, sigma, cond, guidance):
        t = sigma.to(x.device, torch.float32) * 1000  # the scheduler's timestep, as the pipeline passes it
        out = module(
            hidden_states=x,
            timesteps=t,
            encoder_hidden_states_t5=cond["prompt_embeds_t5"],
            encoder_hidden_states_llama3=cond["prompt_embeds_llama3"].transpose(0, 1),
            pooled_embeds=cond["pooled"],
            return_dict=False,
        )[0]
        return -out  # HiDream predicts x0 - eps

    def timestep_kwargs(self, steps, tokens):
        # the pipeline shifts by the transformer's maximum sequence, not by this image's token count
        return {"mu": calculate_shift(self.pipe.transformer.max_seq, {})}

    def architecture(self):
        return "hidream-i1"
