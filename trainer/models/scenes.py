"""Procedural 32x32 scenes with prompts: the training data of TinyFlow and of its judge.

Every image shows one shape with soft, shaded edges and a soft shadow over a lit, gently textured
background, so its statistics are smooth and natural-ish: over-sharpening, over-saturation or odd
lighting after RL fine-tuning shows up as a measurable shift. Each attribute is named by one word
of a small vocabulary, so a prompt parses back into the attributes it asks for. Rendering is
vectorised numpy and deterministic given the random generator.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np

IMAGE_SIZE = 32

# Attribute name -> its values; every value is one vocabulary word that names it in a prompt.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "size": ("small", "large"),
    "colour": ("red", "orange", "yellow", "green", "blue", "purple"),
    "shape": ("circle", "square", "triangle", "ring"),
    "position": ("left", "right", "top", "bottom", "centre"),
    "light": ("dark", "bright"),
    "tone": ("warm", "cool"),
}
HUES = {"red": 0.0, "orange": 28.0, "yellow": 55.0, "green": 125.0, "blue": 220.0, "purple": 280.0}
POSITION_PHRASE = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "centre": "in the centre",
}
POSITION_DIRECTION = {"left": (-1, 0), "right": (1, 0), "top": (0, -1), "bottom": (0, 1), "centre": (0, 0)}
FILLER_WORDS = ("a", "shape", "on", "the", "at", "in", "background")
VOCABULARY: list[str] = list(FILLER_WORDS) + [v for values in ATTRIBUTES.values() for v in values]

# The continuous parameters behind each image (see render_batch_with_style).
STYLE_PARAMS = (
    "background_value",
    "background_hue",
    "background_saturation",
    "gradient_x",
    "gradient_y",
    "radius",
    "centre_x",
    "centre_y",
    "rotation",
    "edge_softness",
    "light_x",
    "light_y",
    "hue_offset",
    "object_value",
    "object_saturation",
)

Attributes = dict[str, str]
_WORD_TO_ATTRIBUTE = {v: name for name, values in ATTRIBUTES.items() for v in values}


def random_attributes(rng: np.random.Generator) -> Attributes:
    """One scene's attributes, each value uniform over its choices."""
    return {name: values[rng.integers(len(values))] for name, values in ATTRIBUTES.items()}


def prompt_for(attrs: Attributes) -> str:
    """The prompt naming the attributes present in attrs, e.g.
    'a small red circle on the left, dark warm background'. Missing attributes are left unsaid
    (the model then draws them at random), which is how training teaches partial prompts."""
    _check(attrs, partial=True)
    words = ["a"]
    words += [attrs[k] for k in ("size", "colour") if k in attrs]
    words.append(attrs.get("shape", "shape"))
    text = " ".join(words)
    if "position" in attrs:
        text += " " + POSITION_PHRASE[attrs["position"]]
    background = [attrs[k] for k in ("light", "tone") if k in attrs]
    if background:
        text += ", " + " ".join(background) + " background"
    return text


def parse_prompt(prompt: str) -> Attributes:
    """The attributes a prompt asks for (only those it names), the inverse of prompt_for."""
    found: Attributes = {}
    for word in re.findall(r"[a-z]+", prompt.lower()):
        name = _WORD_TO_ATTRIBUTE.get(word)
        if name is not None:
            if name in found and found[name] != word:
                raise ValueError(f"prompt {prompt!r} names two values for {name}: {found[name]}, {word}")
            found[name] = word
    return found


def omit_some(attrs: Attributes, rng: np.random.Generator, omit_prob: float) -> Attributes:
    """attrs with each attribute dropped with probability omit_prob (for partial prompts)."""
    return {k: v for k, v in attrs.items() if rng.random() >= omit_prob}


def _check(attrs: Attributes, partial: bool = False) -> None:
    for name, value in attrs.items():
        if name not in ATTRIBUTES:
            raise ValueError(f"unknown scene attribute {name!r}; expected one of {list(ATTRIBUTES)}")
        if value not in ATTRIBUTES[name]:
            raise ValueError(f"scene attribute {name}={value!r} is not one of {ATTRIBUTES[name]}")
    missing = [name for name in ATTRIBUTES if name not in attrs]
    if missing and not partial:
        raise ValueError(f"scene attributes {missing} are missing; rendering needs all of {list(ATTRIBUTES)}")


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Hue in degrees, saturation and value in [0, 1] (same shapes) -> RGB stacked on axis 0."""
    h = (h % 360.0) / 60.0
    c = v * s
    x = c * (1 - np.abs(h % 2 - 1))
    zero = np.zeros_like(c)
    sector = np.floor(h).astype(int) % 6
    table = [(c, x, zero), (x, c, zero), (zero, c, x), (zero, x, c), (x, zero, c), (c, zero, x)]
    rgb = np.zeros((3,) + c.shape, dtype=c.dtype)
    for k, (r, g, b) in enumerate(table):
        hit = sector == k
        rgb[0] = np.where(hit, r, rgb[0])
        rgb[1] = np.where(hit, g, rgb[1])
        rgb[2] = np.where(hit, b, rgb[2])
    return rgb + (v - c)


def _shape_sdf(shape: np.ndarray, px: np.ndarray, py: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Signed distance in pixels (< 0 inside) of each scene's shape. px, py [B, H, W] are offsets
    from the shape's centre in its rotated frame (y down), r [B, 1, 1] its radius; the square and
    triangle are sized to about the circle's area so that size means the same for every shape."""
    dist = np.hypot(px, py)
    circle = dist - r
    half = r * 0.88
    qx, qy = np.abs(px) - half, np.abs(py) - half
    square = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)
    circum = r * 1.3  # equilateral, pointing up: the max of its three edge half-planes
    s3 = np.sqrt(3.0) / 2
    triangle = np.maximum(np.maximum(py, s3 * px - 0.5 * py), -s3 * px - 0.5 * py) - circum / 2
    ring = np.abs(dist - r * 0.7) - r * 0.32
    return np.select([shape == 0, shape == 1, shape == 2], [circle, square, triangle], ring)


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _smooth_noise(rng: np.random.Generator, batch: int, cells: int) -> np.ndarray:
    """Low-frequency texture [B, H, W]: a cells x cells grid of N(0, 1) values, bilinearly upsampled."""
    coarse = rng.standard_normal((batch, cells + 1, cells + 1))
    u = (np.arange(IMAGE_SIZE) + 0.5) / IMAGE_SIZE * cells
    i0 = np.floor(u).astype(int)
    f = u - i0
    rows = coarse[:, i0] * (1 - f)[None, :, None] + coarse[:, i0 + 1] * f[None, :, None]
    return rows[:, :, i0] * (1 - f)[None, None, :] + rows[:, :, i0 + 1] * f[None, None, :]


def render_batch(scenes: list[Attributes], rng: np.random.Generator) -> np.ndarray:
    """Render scenes -> float32 images [B, 3, 32, 32] in [0, 1]. Every attribute must be given;
    the rest (exact hue, radius, placement jitter, rotation, gradient, texture) comes from rng."""
    return render_batch_with_style(scenes, rng)[0]


def render_batch_with_style(
    scenes: list[Attributes], rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """render_batch, plus the continuous parameters each image was drawn with ([B] arrays named by
    STYLE_PARAMS): the judge learns them so its features see sharpness, saturation and lighting."""
    for attrs in scenes:
        _check(attrs)
    b = len(scenes)
    if b == 0:
        empty = np.zeros((0, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
        return empty, {name: np.zeros(0) for name in STYLE_PARAMS}

    def index(name: str) -> np.ndarray:
        return np.array([ATTRIBUTES[name].index(s[name]) for s in scenes])

    def col(x: np.ndarray) -> np.ndarray:  # [B] -> [B, 1, 1] to broadcast over pixels
        return x[:, None, None]

    grid = np.arange(IMAGE_SIZE) + 0.5
    yy, xx = grid[None, :, None], grid[None, None, :]
    centre = IMAGE_SIZE / 2

    # background: dark/bright value, warm/cool hue, a linear light gradient and a soft texture
    dark, warm = index("light") == 0, index("tone") == 0
    bg_v = np.where(dark, rng.uniform(0.12, 0.32, b), rng.uniform(0.68, 0.9, b))
    bg_h = np.where(warm, rng.uniform(15, 50, b), rng.uniform(190, 235, b))
    bg_s = rng.uniform(0.2, 0.45, b)
    angle = rng.uniform(0, 2 * np.pi, b)
    ramp = ((xx - centre) * col(np.cos(angle)) + (yy - centre) * col(np.sin(angle))) / centre
    gradient = rng.uniform(0.04, 0.12, b)
    value = col(bg_v) + col(gradient) * ramp + 0.03 * _smooth_noise(rng, b, 4)
    shape_v = np.clip(value, 0, 1)
    background = hsv_to_rgb(
        np.broadcast_to(col(bg_h), shape_v.shape), np.broadcast_to(col(bg_s), shape_v.shape), shape_v
    )

    # the shape: radius by size, centre by position (+ jitter), small rotation, soft edge
    large = index("size") == 1
    radius = np.where(large, rng.uniform(8.5, 10.5, b), rng.uniform(4.5, 6.0, b))
    offset = np.where(large, 7.0, 9.0)
    direction = np.array([POSITION_DIRECTION[s["position"]] for s in scenes], dtype=float)
    cx = centre + direction[:, 0] * offset + rng.uniform(-1.5, 1.5, b)
    cy = centre + direction[:, 1] * offset + rng.uniform(-1.5, 1.5, b)
    rot = np.deg2rad(rng.uniform(-12, 12, b))
    dx, dy = xx - col(cx), yy - col(cy)
    cos, sin = col(np.cos(rot)), col(np.sin(rot))
    shape = col(index("shape"))
    r = col(radius)
    sdf = _shape_sdf(shape, cos * dx + sin * dy, -sin * dx + cos * dy, r)
    softness = rng.uniform(0.6, 1.0, b)
    alpha = _smoothstep(0.5 - sdf / (2 * col(softness)))

    # light from the upper left (+ jitter): a shaded object and a soft shadow to the lower right
    light = np.deg2rad(rng.uniform(200, 250, b))
    lx, ly = col(np.cos(light)), col(np.sin(light))
    sx, sy = dx + 2.0 * lx, dy + 2.0 * ly
    shadow = _smoothstep(0.5 - _shape_sdf(shape, cos * sx + sin * sy, -sin * sx + cos * sy, r) / 5.0)
    background = background * (1 - 0.35 * shadow)
    shade = np.clip(1 + 0.2 * (dx * lx + dy * ly) / r, 0.7, 1.2)
    hue_offset = rng.uniform(-6, 6, b)
    hue = np.array([HUES[s["colour"]] for s in scenes]) + hue_offset
    obj_value = rng.uniform(0.78, 0.95, b)
    obj_v = np.clip(col(obj_value) * shade, 0, 1)
    obj_saturation = rng.uniform(0.7, 0.95, b)
    obj = hsv_to_rgb(
        np.broadcast_to(col(hue), obj_v.shape), np.broadcast_to(col(obj_saturation), obj_v.shape), obj_v
    )

    image = background * (1 - alpha) + obj * alpha
    image = image + rng.normal(0, 0.012, image.shape)  # film grain
    style = {
        "background_value": bg_v,
        "background_hue": bg_h,
        "background_saturation": bg_s,
        "gradient_x": gradient * np.cos(angle),
        "gradient_y": gradient * np.sin(angle),
        "radius": radius,
        "centre_x": cx,
        "centre_y": cy,
        "rotation": rot,
        "edge_softness": softness,
        "light_x": np.cos(light),
        "light_y": np.sin(light),
        "hue_offset": hue_offset,
        "object_value": obj_value,
        "object_saturation": obj_saturation,
    }
    return np.clip(image, 0, 1).transpose(1, 0, 2, 3).astype(np.float32), style


def render_scene(attrs: Attributes, rng: np.random.Generator) -> np.ndarray:
    """One scene -> float32 image [3, 32, 32] in [0, 1]."""
    return render_batch([attrs], rng)[0]


def sample_scenes(
    rng: np.random.Generator, n: int, omit_prob: float = 0.0
) -> tuple[np.ndarray, list[str], list[Attributes]]:
    """n random scenes: images [n, 3, 32, 32] in [0, 1], their prompts (each attribute left out of
    the prompt with probability omit_prob) and their full attributes."""
    attrs = [random_attributes(rng) for _ in range(n)]
    images = render_batch(attrs, rng)
    prompts = [prompt_for(omit_some(a, rng, omit_prob)) for a in attrs]
    return images, prompts, attrs


def scene_batches(
    seed: int, batch_size: int, omit_prob: float = 0.0
) -> Iterator[tuple[np.ndarray, list[str], list[Attributes]]]:
    """An endless, seeded stream of sample_scenes batches."""
    rng = np.random.default_rng(seed)
    while True:
        yield sample_scenes(rng, batch_size, omit_prob)
