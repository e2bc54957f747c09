"""FID as published numbers compute it (e.g. the paper's 17.1 on COCO).

The features are those of the TensorFlow FID Inception-v3, through its TorchScript port that
clean-fid and StyleGAN ship (`inception-2015-12-05.pt`), read from a local file: nothing is
downloaded. Images are resized to 299 px as clean-fid's default mode does (PIL bicubic on
each channel in float, then scaled to [-1, 1]) rather than by bilinear interpolation inside
the network, which shifts FID. The Fréchet distance itself is torchmetrics'
`FrechetInceptionDistance`, fed by this extractor.

Shape legend: B batch, H/W image size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

INCEPTION_SIZE = 299


def clean_resize(image_HW3_uint8: np.ndarray, size: int = INCEPTION_SIZE) -> np.ndarray:
    """clean-fid's resize: each channel as a float image, PIL bicubic, clipped to 0..255."""
    channels = [
        np.asarray(Image.fromarray(image_HW3_uint8[:, :, c].astype(np.float32), mode="F").resize((size, size), Image.BICUBIC)).clip(0, 255)
        for c in range(3)
    ]
    return np.stack(channels, axis=0)  # (3, size, size) float32


class InceptionFeatures(nn.Module):
    """uint8 images (B, 3, H, W) -> pool features: clean-fid's resize, then the network's `layers`
    (the TorchScript module's body without its own bilinear resize)."""

    def __init__(self, path: str | Path):
        super().__init__()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no TorchScript Inception (eval.inception_path; clean-fid's inception-2015-12-05.pt)")
        # TorchScript, not a pickle: loading it runs no Python from the file
        self.net = torch.jit.load(str(path), map_location="cpu").eval()
        if not hasattr(self.net, "layers"):
            raise ValueError(f"{path}: not the FID Inception (no `layers` submodule, as inception-2015-12-05.pt has)")

    @torch.no_grad()
    def forward(self, images_B3HW_uint8: torch.Tensor) -> torch.Tensor:
        images = images_B3HW_uint8.permute(0, 2, 3, 1).cpu().numpy()
        x = torch.from_numpy(np.stack([clean_resize(image) for image in images]))
        return self.net.layers((x - 128) / 128).flatten(1)


def inception_fid(path: str | Path, real_uint8: np.ndarray, fake_uint8: np.ndarray, batch_size: int = 64) -> float:
    """FID between two image sets (N, H, W, 3) uint8."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError as e:
        raise ImportError("FID needs torchmetrics: pip install 'synth2[fid]'") from e
    metric = FrechetInceptionDistance(feature=InceptionFeatures(path), normalize=False)
    for images, real in ((real_uint8, True), (fake_uint8, False)):
        for start in range(0, len(images), batch_size):
            metric.update(torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).permute(0, 3, 1, 2), real=real)
    return float(metric.compute())
