"""What cache techniques share beyond the hook toolkit: the change measure and block patterns."""

from __future__ import annotations

import re

import torch


def rel_l1(current: torch.Tensor, previous: torch.Tensor) -> float:
    """Relative L1 distance ``mean|a - b| / mean|b|`` (the change measure of FBC/TeaCache)."""
    den = previous.abs().mean()
    return float((current - previous).abs().mean() / den.clamp_min(1e-12))


def block_index_pattern(adapter) -> str:
    """A ``re.fullmatch`` pattern for every block's qualified name (``blocks\\.\\d+`` on Wan)."""
    return re.escape(adapter.blocks_path()) + r"\.\d+"
