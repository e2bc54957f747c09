"""Reference LPIPS distances from the `lpips` package, stored as tests/data/lpips_reference.json.

synth2's LPIPS (`synth2.models.lpips`) must give the `lpips` package's numbers for the same
weights. The real weights (torchvision's ImageNet VGG16) cannot be downloaded here, so both
sides use the seeded weights below, with torch alone generating them and the image pairs, so
the test regenerates the same tensors. Run it where `lpips` and torchvision import (they are
not synth2 dependencies), with the same torch version as the tests:

    python scripts/lpips_reference.py tests/data/lpips_reference.json
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import sys

import torch

# torchvision's vgg16 `features`: conv widths, "M" = max-pool (the layers LPIPS reads, up to relu5_3)
VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
TAP_CHANNELS = (64, 128, 256, 512, 512)
SEED = 0


def fixture_weights() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(VGG16 `features.*` state dict, LPIPS `lin{k}.model.1.weight` state dict), He-scaled and seeded."""
    g = torch.Generator().manual_seed(SEED)
    features, c_in, index = {}, 3, 0  # index: the layer's position in `features`
    for item in VGG16:
        if item == "M":
            index += 1
            continue
        features[f"{index}.weight"] = torch.randn(item, c_in, 3, 3, generator=g) * math.sqrt(2.0 / (item * 9))
        features[f"{index}.bias"] = torch.randn(item, generator=g) * 0.01
        c_in, index = item, index + 2  # a conv and its ReLU
    lin = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) * 0.1 for k, c in enumerate(TAP_CHANNELS)}
    return features, lin


def fixture_pairs() -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs of 48x48 images in [-1, 1]: smooth random scenes against noisy, shifted, dimmed and
    unrelated versions of themselves."""
    g = torch.Generator().manual_seed(SEED + 1)
    coarse = torch.rand(4, 3, 6, 6, generator=g) * 2 - 1
    scenes = torch.nn.functional.interpolate(coarse, size=(48, 48), mode="bicubic", align_corners=False).clamp(-1, 1)
    noisy = (scenes + 0.2 * torch.randn(scenes.shape, generator=g)).clamp(-1, 1)
    shifted = torch.roll(scenes, shifts=(3, -2), dims=(2, 3))
    dimmed = scenes * 0.6
    unrelated = scenes.flip(0)
    a = torch.cat([scenes, scenes, scenes, scenes, scenes[:1]])
    b = torch.cat([noisy, shifted, dimmed, unrelated, scenes[:1]])  # the last pair: an image with itself
    return a, b


def main(out: str) -> None:
    import lpips  # noqa: PLC0415 - only where the reference is computed

    model = lpips.LPIPS(net="vgg", pretrained=False, pnet_rand=True, verbose=False).eval()
    features, lin = fixture_weights()
    state = model.state_dict()
    slices = {}  # feature index -> the lpips package's slice holding it
    for k in range(1, 6):
        for name in getattr(model.net, f"slice{k}")._modules:
            slices[int(name)] = k
    for key, value in features.items():
        index, kind = key.split(".")
        state[f"net.slice{slices[int(index)]}.{index}.{kind}"] = value
    state.update(lin)
    model.load_state_dict(state, strict=True)
    a, b = fixture_pairs()
    with torch.no_grad():
        distances = model(a, b).flatten().tolist()
    payload = {"lpips": importlib.metadata.version("lpips"), "torch": torch.__version__, "net": "vgg", "version": "0.1", "distances": distances}
    with open(out, "w") as f:
        json.dump(payload, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
