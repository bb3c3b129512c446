"""Flow Diffusion-DPO: the preferred sample's error must fall faster than the rejected one's."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _mse(v: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    return (v.float() - u.float()).square().flatten(1).mean(dim=1)


def dpo_loss(
    v_w: torch.Tensor,
    v_ref_w: torch.Tensor,
    u_w: torch.Tensor,
    v_l: torch.Tensor,
    v_ref_l: torch.Tensor,
    u_l: torch.Tensor,
    *,
    beta: float = 100.0,
) -> torch.Tensor:
    """-log sigmoid(-beta/2 * [(err_w - err_ref_w) - (err_l - err_ref_l)]), mean over pairs.

    w/l are the best and worst sample of a group at the same noise and timestep; the reference
    errors come from the same no-grad reference pass NormGuard uses.
    """
    err_w, err_l = _mse(v_w, u_w), _mse(v_l, u_l)
    with torch.no_grad():
        ref_w, ref_l = _mse(v_ref_w, u_w), _mse(v_ref_l, u_l)
    margin = (err_w - ref_w) - (err_l - ref_l)
    return -F.logsigmoid(-0.5 * beta * margin).mean()
