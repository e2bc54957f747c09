"""FID: clean-fid's procedure (resize, the network's layers) and torchmetrics' Fréchet distance.

The FID Inception's weights cannot be downloaded here, so a small TorchScript network with
the same interface (a `layers` body taking [-1, 1] images at 299 px) stands in for it; what
is checked is the procedure around it, which is what makes numbers comparable."""

import numpy as np
import pytest
import torch
from torch import nn

from synth2.eval.fid import INCEPTION_SIZE, InceptionFeatures, clean_resize, inception_fid
from synth2.eval.generator import frechet_distance


class StandIn(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(3, 8, 9, stride=8), nn.ReLU(), nn.Conv2d(8, 12, 3, stride=2), nn.AdaptiveAvgPool2d(1))

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return self.layers(x)


@pytest.fixture(scope="module")
def inception(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("fid") / "inception.pt"
    torch.jit.script(StandIn().eval()).save(str(path))
    return path


@pytest.fixture(scope="module")
def photos():
    """Two sets of 32-px crops of real photographs, and the first set with noise."""
    import skimage.data

    rng = np.random.default_rng(0)
    sets = []
    for name in ("astronaut", "coffee"):
        photo = getattr(skimage.data, name)()
        crops = []
        for _ in range(40):
            top, left = rng.integers(0, photo.shape[0] - 128), rng.integers(0, photo.shape[1] - 128)
            crops.append(photo[top : top + 128 : 4, left : left + 128 : 4])
        sets.append(np.stack(crops))
    noisy = np.clip(sets[0] + rng.normal(0, 40, sets[0].shape), 0, 255).astype(np.uint8)
    return sets[0], sets[1], noisy


def test_clean_resize_is_pil_bicubic_per_channel_in_float():
    from PIL import Image

    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = clean_resize(image)
    assert out.shape == (3, INCEPTION_SIZE, INCEPTION_SIZE) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 255
    # the same filter as a plain PIL RGB resize, but in float: not rounded (or clipped) between passes
    quantised = np.asarray(Image.fromarray(image).resize((INCEPTION_SIZE, INCEPTION_SIZE), Image.BICUBIC)).transpose(2, 0, 1)
    assert np.abs(out - quantised).mean() < 1.0 and not np.array_equal(out, out.round())
    assert np.allclose(clean_resize(np.full((20, 20, 3), 77, np.uint8)), 77, atol=1e-3)


def test_fid_agrees_with_the_frechet_distance_of_the_same_features(inception, photos):
    real, other, noisy = photos
    features = InceptionFeatures(inception)
    f = {name: features(torch.from_numpy(x).permute(0, 3, 1, 2)).double().numpy() for name, x in (("real", real), ("other", other))}
    assert inception_fid(inception, real, other) == pytest.approx(frechet_distance(f["real"], f["other"]), rel=1e-4)


def test_fid_orders_image_sets_by_how_far_they_are_from_the_real_ones(inception, photos):
    real, other, noisy = photos
    assert inception_fid(inception, real, real) == pytest.approx(0.0, abs=1e-4)
    assert 0 < inception_fid(inception, real, noisy) and 0 < inception_fid(inception, real, other)


def test_a_file_that_is_not_the_fid_inception_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.jit.script(nn.Linear(2, 2)).save(str(path))
    with pytest.raises(ValueError, match="not the FID Inception"):
        InceptionFeatures(path)
    with pytest.raises(FileNotFoundError, match="inception-2015-12-05"):
        InceptionFeatures(tmp_path / "missing.pt")
