"""Data augmentation on whole batches of image tensors, on whatever device they live on.

Each function takes images (N, C, H, W) in [0, 1] and a torch.Generator on their device, so
augmentation costs a few tensor ops per batch instead of a PIL round trip per sample.
"""

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def random_crop(x: torch.Tensor, padding: int, gen: torch.Generator) -> torch.Tensor:
    """Pad each side by `padding` (zeros) and cut a random H x W window per image."""
    n, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n, 1), generator=gen, device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (n, 1), generator=gen, device=x.device)
    rows = (dy + torch.arange(h, device=x.device))[:, :, None]  # (N, H, 1)
    cols = (dx + torch.arange(w, device=x.device))[:, None, :]  # (N, 1, W)
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(len(x), generator=gen, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def random_rotation(x: torch.Tensor, degrees: float, gen: torch.Generator) -> torch.Tensor:
    """Rotate each image by an angle drawn uniformly in [-degrees, degrees]."""
    angle = (torch.rand(len(x), generator=gen, device=x.device) * 2 - 1) * math.radians(degrees)
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
    theta = torch.stack([cos, -sin, zero, sin, cos, zero], dim=1).view(-1, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


def color_jitter(x: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """Scale brightness, contrast and saturation of each RGB image by factors in 1 +- strength."""

    def factor() -> torch.Tensor:
        u = torch.rand(len(x), 1, 1, 1, generator=gen, device=x.device)
        return 1 + (u * 2 - 1) * strength

    x = x * factor()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * factor() + mean
    gray = (x * torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)).sum(
        1, keepdim=True
    )
    x = (x - gray) * factor() + gray
    return x.clamp_(0, 1)


def augment(x: torch.Tensor, hp: dict[str, Any], gen: torch.Generator) -> torch.Tensor:
    """Apply the augmentations `hp` turns on to a training batch of images."""
    if hp["crop_padding"] > 0:
        x = random_crop(x, hp["crop_padding"], gen)
    if hp["hflip"]:
        x = random_flip(x, gen)
    if hp["rotation"] > 0:
        x = random_rotation(x, hp["rotation"], gen)
    if hp["color_jitter"] > 0 and x.shape[1] == 3:
        x = color_jitter(x, hp["color_jitter"], gen)
    return x


def enabled(hp: dict[str, Any]) -> bool:
    """Whether any augmentation is on."""
    return bool(hp["crop_padding"] or hp["hflip"] or hp["rotation"] or hp["color_jitter"])


def mixing(hp: dict[str, Any]) -> bool:
    """Whether mixup or cutmix is on."""
    return hp["mixup_alpha"] > 0 or hp["cutmix_alpha"] > 0


def mix(
    x: torch.Tensor, hp: dict[str, Any], gen: torch.Generator, key: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mixup or cutmix of a training batch (one of them per batch, by a coin, when both are
    on): each example is blended with (mixup) or has a box pasted from (cutmix) a partner of
    the same batch. The share of its own image, `share`, is drawn from Beta(alpha, alpha) by
    a numpy generator seeded with `key`; the partners come from `gen` on the batch's device.
    Returns the mixed batch, the partners' order and `share` (for cutmix, the area kept)."""
    draw = np.random.default_rng(key)
    cutmix = hp["cutmix_alpha"] > 0 and (hp["mixup_alpha"] == 0 or draw.random() < 0.5)
    alpha = hp["cutmix_alpha"] if cutmix else hp["mixup_alpha"]
    share = float(draw.beta(alpha, alpha))
    partner = torch.randperm(len(x), generator=gen, device=x.device)
    if not cutmix:
        return share * x + (1 - share) * x[partner], partner, share
    if x.dim() != 4:
        raise ValueError("cutmix_alpha: cutmix needs images (N, C, H, W); use mixup_alpha")
    h, w = x.shape[2:]
    cut_h, cut_w = int(h * math.sqrt(1 - share)), int(w * math.sqrt(1 - share))
    cy, cx = int(draw.integers(h)), int(draw.integers(w))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
    x = x.clone()
    x[:, :, top:bottom, left:right] = x[partner, :, top:bottom, left:right]
    return x, partner, 1 - (bottom - top) * (right - left) / (h * w)
