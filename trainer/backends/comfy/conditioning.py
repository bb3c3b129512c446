"""Prompts -> the model's own inputs, as a KSampler builds them.

The CLIP's output goes through ComfyUI conditioning and `BaseModel.extra_conds`, so any CONST model
ComfyUI supports gets its own inputs (context, pooled `y`, `guidance`, ...). Rows are batched as
ComfyUI's sampler batches conds: cross-attention text (CONDCrossAttn) is repeated to a common token
count, which leaves attention unchanged; text ComfyUI never pads (CONDRegular, e.g. Z-Image's
variable-length captions) and per-prompt constants (its num_tokens) put a row in a group of its own,
evaluated apart and trimmed back to its own length (GROUP_KEY).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from ..base import Cond, cond_cat
from .patching import plain

GROUP_KEY = "normguard_group"  # per row: its index into PromptConditioning.groups


class PromptConditioning:
    """The encoded rows of every prompt seen so far, and the groups they are evaluated in."""

    def __init__(
        self, model: Any, clip: Any, device: torch.device, guidance: float | None, height: int, width: int
    ):
        self.model, self.clip, self.device, self.guidance = model, clip, device, guidance
        self.height, self.width = height, width
        self.rows: dict[str, Cond] = {}
        self.groups: list[tuple[dict[str, Any], dict[str, int]]] = []  # (constants, text lengths)
        self._crossattn: set[str] = set()  # conds ComfyUI batches by repeating tokens (CONDCrossAttn)
        self._tokens: dict[str, int] = {}  # text-token count per cross-attention key

    def missing(self, prompts: Sequence[str]) -> list[str]:
        """The prompts not encoded yet, each once."""
        return [p for p in dict.fromkeys(prompts) if p not in self.rows]

    def batch(self, prompts: Sequence[str]) -> Cond:
        """The rows of `prompts` (all encoded), concatenated."""
        return cond_cat([self.rows[p] for p in prompts])

    def encode(self, prompts: list[str], latent_shape: tuple[int, ...]) -> None:
        """CLIP -> ComfyUI conditioning -> the model's own inputs (extra_conds), one row per prompt."""
        import comfy.conds

        fresh: dict[str, Cond] = {}
        for prompt in prompts:
            with torch.inference_mode():
                tokens = self.clip.tokenize(prompt)
                out = self.clip.encode_from_tokens(tokens, return_pooled=True, return_dict=True)
                cross = out.pop("cond")
                if self.guidance is not None:
                    out["guidance"] = self.guidance
                conds = self.model.extra_conds(
                    cross_attn=cross,
                    noise=torch.zeros(1, *latent_shape),
                    device=self.device,
                    width=self.width,
                    height=self.height,
                    prompt_type="positive",
                    **out,
                )
            row: Cond = {}
            constants: dict[str, Any] = {}
            lengths: dict[str, int] = {}
            for key, cond in conds.items():
                if isinstance(cond, comfy.conds.CONDConstant):
                    constants[key] = cond.cond
                elif type(cond) is comfy.conds.CONDCrossAttn:
                    row[key] = plain(cond.cond)
                    self._crossattn.add(key)
                elif type(cond) is comfy.conds.CONDRegular:
                    row[key] = plain(cond.cond)
                    if row[key].ndim >= 2:
                        lengths[key] = row[key].shape[1]
                else:
                    raise ValueError(
                        f"NormGuard: the model needs conditioning {key!r} of kind {type(cond).__name__}, "
                        "which the trainer does not support (only text conditioning)"
                    )
            row[GROUP_KEY] = torch.tensor([self._group_of(constants, lengths)])
            fresh[prompt] = row
        self._equal_tokens(fresh)
        self.rows.update(fresh)

    def _equal_tokens(self, fresh: dict[str, Cond]) -> None:
        """Repeat each cross-attention text to the token count common to all rows (old and `fresh`)."""
        for key in {k for row in fresh.values() for k in row if k in self._crossattn}:
            lengths = {row[key].shape[1] for row in fresh.values()}
            if key in self._tokens:
                lengths.add(self._tokens[key])
            self._tokens[key] = target = math.lcm(*lengths)
            for prompt, row in [*fresh.items(), *self.rows.items()]:
                n = row[key].shape[1]
                if n != target:
                    if prompt in self.rows:  # already handed out at another length
                        raise ValueError(
                            f"NormGuard: prompt {prompt!r} was encoded to {n} text tokens before a longer "
                            f"prompt needed {target}; list every prompt up front"
                        )
                    # repeating the tokens leaves cross-attention unchanged (ComfyUI pads conds so)
                    row[key] = row[key].repeat(1, target // n, *([1] * (row[key].ndim - 2)))

    def _group_of(self, constants: dict[str, Any], lengths: dict[str, int]) -> int:
        """Index of the group of rows that share these constants and unpadded text lengths."""
        import comfy.conds

        for i, (c, n) in enumerate(self.groups):
            if n == lengths and c.keys() == constants.keys():
                if all(comfy.conds.is_equal(c[k], constants[k]) for k in c):
                    return i
        self.groups.append((constants, lengths))
        return len(self.groups) - 1

    def split(self, cond: Cond) -> Iterator[tuple[torch.Tensor, dict[str, Any]]]:
        """Per group of rows in a batch: (the rows' indices, their apply_model inputs and constants)."""
        groups = cond[GROUP_KEY]
        for gid in groups.unique().tolist():
            rows = (groups == gid).nonzero().flatten()
            constants, lengths = self.groups[gid]
            inputs = {k: v[rows.to(v.device)] for k, v in cond.items() if k != GROUP_KEY}
            for key, n in lengths.items():
                inputs[key] = inputs[key][:, :n]  # cond_cat zero-pads rows of other groups' lengths
            yield rows, {**inputs, **constants}
