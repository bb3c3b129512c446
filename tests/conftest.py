"""Shared pytest fixtures."""

from diffusers_kit import (  # noqa: F401  (session fixtures: tiny diffusers pipelines)
    tiny_flux_dir,
    tiny_flux_schnell_dir,
    tiny_nonflow_dir,
    tiny_sd3_dir,
)
