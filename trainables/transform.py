"""What every example goes through on its way to the network, in the training loop and
wherever a model's input is shown (preflight's forward pass, the registered model's input
example): uint8 images become floats in [0, 1], then each channel is standardised."""

import torch


def as_floats(x: torch.Tensor) -> torch.Tensor:
    """Examples as float32: uint8 images divided by 255, anything else converted."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x.float()


def normalize(
    x: torch.Tensor, mean: tuple[float, ...] | None, std: tuple[float, ...] | None
) -> torch.Tensor:
    """Standardise a batch of images per channel (a no-op without statistics)."""
    if mean is None:
        return x
    shape = (1, -1, 1, 1)
    center = torch.tensor(mean, device=x.device).view(shape)
    scale = torch.tensor(std, device=x.device).view(shape)
    return (x - center) / scale
