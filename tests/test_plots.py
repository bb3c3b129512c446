"""Charts render to RGB arrays; what is drawn depends on the data (checked on the pixels)."""

from __future__ import annotations

import numpy as np
import pytest

from normguard.trainer.plots import metric_chart, probe_chart


def log(label: str, ratio: list | None = None, ref: list | None = None) -> dict:
    return {
        "label": label,
        "step": [0, 1, 2, 3],
        "norm": [7.0, 6.5, 6.1, 6.0],
        "norm_ref": ref or [None] * 4,
        "ratio": ratio or [None] * 4,
    }


def test_probe_chart_is_an_rgb_image_of_the_requested_size():
    img = probe_chart([log("a", ratio=[1.0, 1.1, 1.2, 1.3], ref=[7.0, 6.0, 5.0, 4.6])], width=640, height=480)
    assert img.shape == (480, 640, 3) and img.dtype == np.uint8
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 10  # not a blank canvas


def test_ratio_panel_appears_only_with_a_reference():
    without = probe_chart([log("a")])
    with_ref = probe_chart([log("a", ratio=[1.0, 1.1, 1.2, 1.3], ref=[7.0, 6.0, 5.0, 4.6])])
    # a second panel adds axes frame lines in the lower half: more dark pixels there
    lower = slice(without.shape[0] // 2 + 40, without.shape[0] - 60)
    dark = lambda im: int((im[lower] < 80).all(axis=2).sum())  # noqa: E731
    assert dark(with_ref) > dark(without)


def test_overlays_add_a_colour_per_log():
    one = probe_chart([log("a")])
    two = probe_chart([log("a"), {**log("b"), "norm": [5.0, 5.5, 6.0, 6.2]}])
    orange = lambda im: int(
        ((im[..., 0] > 200) & (im[..., 1] > 100) & (im[..., 1] < 160) & (im[..., 2] < 60)).sum()
    )  # noqa: E731
    assert orange(one) == 0 and orange(two) > 50  # matplotlib's C1 is orange


def test_missing_values_are_skipped_and_empty_input_is_refused():
    img = probe_chart([{**log("a"), "norm": [7.0, None, 6.1, None]}])
    assert img.shape[2] == 3
    with pytest.raises(ValueError, match="at least one log"):
        probe_chart([])


def test_metric_chart_draws_known_keys_and_refuses_unknown_ones():
    rows = [{"iteration": i, "reward_mean": 0.1 * i, "train_rho": 1 + 0.01 * i} for i in range(1, 6)]
    assert metric_chart(rows).shape == (600, 800, 3)
    with pytest.raises(ValueError, match="none of the requested metrics"):
        metric_chart(rows, keys=("nope",))
