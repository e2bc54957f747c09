"""SynthVLM's selection scores: CLIPScore, SSIM, and their weighted sum.

CLIPScore (Hessel et al., 2021) = 2.5 * max(cos(image, text), 0).

SSIM needs two images, and SynthVLM does not say which two (its public code selects
by CLIPScore alone). synth2's default compares the synthetic image with its own
VQ reconstruction (encode, then decode): an image the shared tokenizer reproduces
faithfully is on the manifold the VLM will see, while artefacts the codebook cannot
express lower it. The definition is pluggable (`curate.ssim`: "vq_reconstruction" or "none").

Weighted score = max(cos, 0) + lambda * max(SSIM, 0), both terms in [0, 1], lambda = 0.5:
SynthVLM's reported numbers (CLIP 0.36, SSIM 0.86, weighted 0.79) follow exactly this
form with the cosine, not the 2.5-scaled CLIPScore.
"""

from __future__ import annotations

import numpy as np
import torch

from synth2.data.images import resize_center_crop
from synth2.eval.vq import ssim
from synth2.models.device import device_of
from synth2.models.vq import to_model_pixels, to_uint8


class ControlledScorer:
    """CLIP cosine from synth2's dual encoder (trained on the paired data only)."""

    def __init__(self, model, lm):
        self.model, self.lm = model.eval(), lm

    @torch.no_grad()
    def cosine(self, images_uint8: np.ndarray, captions: list[str], batch_size: int = 256) -> np.ndarray:
        out = []
        for start in range(0, len(captions), batch_size):
            device = device_of(self.model)
            pixels = to_model_pixels(torch.from_numpy(images_uint8[start : start + batch_size])).to(device)
            states, mask = (t.to(device) for t in self.lm.encode_texts(captions[start : start + batch_size]))
            out.append((self.model.embed_images(pixels) * self.model.embed_texts(states, mask)).sum(-1).cpu())
        return torch.cat(out).numpy()


class HFClipScorer:
    """CLIP cosine from a Hugging Face CLIP model in a local directory (e.g. openai/clip-vit-large-patch14-336)."""

    def __init__(self, path: str):
        from transformers import CLIPModel, CLIPProcessor

        self.model = CLIPModel.from_pretrained(path).eval()
        self.processor = CLIPProcessor.from_pretrained(path)

    @torch.no_grad()
    def cosine(self, images_uint8: np.ndarray, captions: list[str], batch_size: int = 64) -> np.ndarray:
        out = []
        for start in range(0, len(captions), batch_size):
            inputs = self.processor(text=captions[start : start + batch_size], images=list(images_uint8[start : start + batch_size]), return_tensors="pt", padding=True, truncation=True)
            image = _projected(self.model.get_image_features(pixel_values=inputs["pixel_values"]))
            text = _projected(self.model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]))
            out.append((torch.nn.functional.normalize(image, dim=-1) * torch.nn.functional.normalize(text, dim=-1)).sum(-1))
        return torch.cat(out).numpy()


def _projected(features) -> torch.Tensor:
    """transformers 4 returns the projected features; 5 returns an output whose pooler_output holds them."""
    return features if isinstance(features, torch.Tensor) else features.pooler_output


def clip_score(cosine: np.ndarray) -> np.ndarray:
    return 2.5 * np.maximum(cosine, 0.0)


@torch.no_grad()
def reconstruction_ssim(vq, images_uint8: np.ndarray, resolution: int, batch_size: int = 256) -> np.ndarray:
    """SSIM between each image and its reconstruction by the shared VQ (at the VQ's resolution)."""
    images = np.stack([resize_center_crop(i, resolution) for i in images_uint8]) if images_uint8.shape[1] != resolution else images_uint8
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        recon = to_uint8(vq.decode(vq.encode(to_model_pixels(torch.from_numpy(chunk)).to(device_of(vq))))).cpu().numpy()
        out.append(ssim(chunk, recon))
    return np.concatenate(out)


def weighted_score(cosine: np.ndarray, ssim_values: np.ndarray | None, lam: float) -> np.ndarray:
    score = np.maximum(cosine, 0.0)
    if ssim_values is not None:
        score = score + lam * np.maximum(ssim_values, 0.0)
    return score
