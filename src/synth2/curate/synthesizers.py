"""Image synthesis for a caption pool behind one interface: `images(captions, seed) -> (N, H, W, 3) uint8`.

- `OwnSynthesizer`: synth2's controlled generator (tokens, decoded by the VQ);
- `DiffusersSynthesizer`: any diffusers text-to-image pipeline in a local directory
  (SDXL as in SynthVLM), through `AutoPipelineForText2Image` (optional extra).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


class OwnSynthesizer:
    name = "synth2"

    def __init__(self, generator, batch_size: int = 128):
        self.generator, self.batch_size = generator, batch_size

    def images(self, captions: list[str], seed: int) -> np.ndarray:
        _, pixels = self.generator.generate(captions, seed=seed, batch_size=self.batch_size, pixels=True)
        return pixels


class DiffusersSynthesizer:
    name = "diffusers"

    def __init__(self, path: str | Path, steps: int = 30, guidance: float = 5.0, size: int | None = None, batch_size: int = 4, device: str = "auto"):
        try:
            from diffusers import AutoPipelineForText2Image
        except ImportError as e:
            raise ImportError("a diffusers synthesizer needs diffusers: pip install 'synth2[diffusers]'") from e
        device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.pipe = AutoPipelineForText2Image.from_pretrained(str(path)).to(device)
        self.pipe.set_progress_bar_config(disable=True)
        self.device, self.steps, self.guidance, self.size, self.batch_size = device, steps, guidance, size, batch_size

    def images(self, captions: list[str], seed: int) -> np.ndarray:
        out = []
        for start in range(0, len(captions), self.batch_size):
            chunk = captions[start : start + self.batch_size]
            generators = [torch.Generator(device=self.device).manual_seed(seed * 1_000_003 + start + i) for i in range(len(chunk))]
            kwargs = {"height": self.size, "width": self.size} if self.size else {}
            result = self.pipe(prompt=chunk, num_inference_steps=self.steps, guidance_scale=self.guidance, generator=generators, output_type="np", **kwargs)
            out.append(np.clip(np.rint(result.images * 255), 0, 255).astype(np.uint8))
        return np.concatenate(out)
