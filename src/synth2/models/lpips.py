"""LPIPS perceptual distance (Zhang et al., 2018) with VGG16 features, from local weights only.

The `lpips` package needs torchvision (which does not import beside every torch
build) and downloads VGG16 at run time; here both weight files come from a local
directory, so the perceptual loss is available offline when a user has them:

    <dir>/vgg16.pth   torchvision's VGG16 ImageNet weights (vgg16-397923af.pth)
    <dir>/vgg.pth     LPIPS v0.1 linear layers (lpips/weights/v0.1/vgg.pth in the lpips package)

Shape legend: B batch, C channels, H/W pixels.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

# torchvision vgg16 `features` layout: conv widths, "M" = max-pool
_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
# indices (in `features`) of the ReLUs LPIPS taps: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
_TAPS = (3, 8, 15, 22, 29)
_TAP_CHANNELS = (64, 128, 256, 512, 512)


def _vgg16_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    c_in = 3
    for item in _VGG16:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c_in, item, 3, padding=1), nn.ReLU(inplace=False)]
            c_in = item
    return nn.Sequential(*layers)


class _Linear(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))


class LPIPS(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = _vgg16_features()
        for k, c in enumerate(_TAP_CHANNELS):
            setattr(self, f"lin{k}", _Linear(c))
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_directory(cls, directory: str | Path) -> "LPIPS":
        directory = Path(directory)
        model = cls()
        vgg = torch.load(directory / "vgg16.pth", map_location="cpu", weights_only=True)
        features = {k[len("features.") :]: v for k, v in vgg.items() if k.startswith("features.")}
        model.features.load_state_dict(features)
        lin = torch.load(directory / "vgg.pth", map_location="cpu", weights_only=True)
        missing = [k for k in (f"lin{i}.model.1.weight" for i in range(5)) if k not in lin]
        if missing:
            raise ValueError(f"{directory / 'vgg.pth'}: not LPIPS v0.1 linear weights (missing {missing})")
        model.load_state_dict({**{f"features.{k}": v for k, v in features.items()}, **lin}, strict=False)
        return model

    def _taps(self, x_BCHW: torch.Tensor) -> list[torch.Tensor]:
        out = []
        h = (x_BCHW - self.shift) / self.scale
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in _TAPS:
                out.append(h)
            if i == _TAPS[-1]:
                break
        return out

    def forward(self, a_BCHW: torch.Tensor, b_BCHW: torch.Tensor) -> torch.Tensor:
        """Per-image distance (B,) between images in [-1, 1]."""
        total = 0.0
        for k, (fa, fb) in enumerate(zip(self._taps(a_BCHW), self._taps(b_BCHW))):
            fa = fa / (fa.norm(dim=1, keepdim=True) + 1e-10)
            fb = fb / (fb.norm(dim=1, keepdim=True) + 1e-10)
            total = total + getattr(self, f"lin{k}").model((fa - fb) ** 2).mean(dim=(1, 2, 3))
        return total
