"""Tokenizer metrics on an eval split: PSNR, SSIM, codebook usage, perplexity, token stability,
and on the embedded world the oracle accuracy of reconstructions."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from pytorch_msssim import ssim as ms_ssim

from synth2.eval.schema import metric
from synth2.models.codes import codebook_usage
from synth2.models.device import device_of
from synth2.models.vq import to_model_pixels, to_uint8
from synth2.world.oracle import ERROR_CAUSES, hits_by_shape, object_accuracy, object_errors

_ERRORS = "oracle errors per occupied cell: " + " / ".join(ERROR_CAUSES)


@dataclass
class VQMetrics:
    """What `evaluate_vq` measures; oracle fields are None off the embedded world."""

    psnr: float | None = metric("PSNR (dB) / SSIM")
    ssim: float | None = metric("PSNR (dB) / SSIM")
    codebook_usage: float | None = metric("codebook usage / perplexity", pct=True)
    perplexity: float | None = metric("codebook usage / perplexity")
    oracle_accuracy: float | None = metric("oracle accuracy of reconstructions", pct=True)
    oracle_shape_errors: float | None = metric(_ERRORS, pct=True)
    oracle_colour_errors: float | None = metric(_ERRORS, pct=True)
    oracle_size_errors: float | None = metric(_ERRORS, pct=True)
    oracle_missed_errors: float | None = metric(_ERRORS, pct=True)
    oracle_spurious_errors: float | None = metric(_ERRORS, pct=True)
    # per class: a tokenizer trained on skewed images keeps the frequent classes and loses the rare
    oracle_accuracy_by_shape: dict[str, float] | None = metric("oracle accuracy per shape (recall)", pct=True)
    token_stability: float | None = metric("encode-decode-encode token stability", pct=True)


def psnr(a_uint8: np.ndarray, b_uint8: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB on the 0..255 scale (capped at 100 for identical images)."""
    mse = ((a_uint8.astype(np.float64) - b_uint8.astype(np.float64)) ** 2).reshape(len(a_uint8), -1).mean(axis=1)
    return np.where(mse == 0, 100.0, 10 * np.log10(255.0**2 / np.maximum(mse, 1e-12)))


def ssim(a_uint8: np.ndarray, b_uint8: np.ndarray) -> np.ndarray:
    """Per-image SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5) via pytorch-msssim."""
    a = torch.from_numpy(a_uint8).permute(0, 3, 1, 2).float()
    b = torch.from_numpy(b_uint8).permute(0, 3, 1, 2).float()
    return ms_ssim(a, b, data_range=255.0, size_average=False).numpy()


@torch.no_grad()
def reconstruct(model, images_uint8: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(token ids (N, h, w), reconstructions (N, H, W, 3) uint8)."""
    ids, recon = [], []
    for start in range(0, len(images_uint8), batch_size):
        x = to_model_pixels(torch.from_numpy(images_uint8[start : start + batch_size])).to(device_of(model))
        batch_ids = model.encode(x)
        ids.append(batch_ids.cpu())
        recon.append(to_uint8(model.decode(batch_ids)).cpu())
    return torch.cat(ids).numpy(), torch.cat(recon).numpy()


def codebook_stats(ids: np.ndarray, factors: tuple[int, ...]) -> dict[str, float]:
    """Usage (`models.codes.codebook_usage`) and perplexity of the token ids; `factors` are the
    parts' codebook sizes (one entry unless codes are products)."""
    counts = np.bincount(ids.reshape(-1), minlength=int(np.prod(factors)))
    p = counts / counts.sum()
    nz = p[p > 0]
    usage = codebook_usage(torch.from_numpy(np.asarray(ids, dtype=np.int64)), factors)
    return {"codebook_usage": usage, "perplexity": float(np.exp(-(nz * np.log(nz)).sum()))}


@torch.no_grad()
def evaluate_vq(model, images_uint8: np.ndarray, scenes=None, oracle=None, batch_size: int = 256) -> dict:
    """The fields of `VQMetrics` as a dict."""
    was_training = model.training
    model.eval()
    ids, recon = reconstruct(model, images_uint8, batch_size)
    ids_again, _ = reconstruct(model, recon, batch_size)
    metrics = {
        "psnr": float(psnr(images_uint8, recon).mean()),
        "ssim": float(ssim(images_uint8, recon).mean()),
        **codebook_stats(ids, model.code_factors),
        "token_stability": float((ids == ids_again).mean()),
    }
    if oracle is not None and scenes is not None:
        right = total = 0
        errors: dict[str, int] = {}
        hits: dict[str, list[bool]] = {}
        for scene, image in zip(scenes, recon):
            parsed = oracle.parse(image)
            a, b = object_accuracy(scene, parsed)
            right, total = right + a, total + b
            for key, count in object_errors(scene, parsed).items():
                errors[key] = errors.get(key, 0) + count
            for shape, hit in hits_by_shape(scene, parsed):
                hits.setdefault(shape, []).append(hit)
        metrics["oracle_accuracy"] = right / max(total, 1)
        metrics["oracle_accuracy_by_shape"] = {shape: float(np.mean(h)) for shape, h in sorted(hits.items())}
        # what the reconstructions lose, as shares of the occupied cells (shape, colour, size, missed, spurious)
        cells = max(errors.pop("cells"), 1)
        metrics.update({f"oracle_{cause}_errors": errors[cause] / cells for cause in ERROR_CAUSES})
    model.train(was_training)
    return asdict(VQMetrics(**metrics))
