"""Images/s of the MUSE parallel sampler (24 steps, guidance) vs autoregressive decoding of the
same token count with a model of the same size (why the paper chose MUSE).

The autoregressive baseline is the same transformer with causal self-attention and a
KV cache, sampling one token per forward (with guidance, two forwards per token).

    .venv/bin/python benchmarks/bench_sampler.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common import median_of, save, timed

from synth2.config import quick
from synth2.models.sampler import SamplerConfig, sample
from synth2.models.t2i import T2IConfig, T2IModel


class CausalDecoder(torch.nn.Module):
    """The generator's blocks (same widths) as a causal token-by-token decoder with a KV cache."""

    def __init__(self, cfg: T2IConfig, codebook: int, num_tokens: int, text_width: int):
        super().__init__()
        self.heads = cfg.heads
        self.embed = torch.nn.Embedding(codebook + 1, cfg.width)
        self.pos = torch.nn.Parameter(torch.zeros(num_tokens, cfg.width))
        self.text_proj = torch.nn.Linear(text_width, cfg.width)
        self.layers = torch.nn.ModuleList(
            torch.nn.ModuleDict({
                "n1": torch.nn.LayerNorm(cfg.width), "qkv": torch.nn.Linear(cfg.width, 3 * cfg.width), "o": torch.nn.Linear(cfg.width, cfg.width),
                "n2": torch.nn.LayerNorm(cfg.width), "q": torch.nn.Linear(cfg.width, cfg.width), "kv": torch.nn.Linear(cfg.width, 2 * cfg.width),
                "o2": torch.nn.Linear(cfg.width, cfg.width), "n3": torch.nn.LayerNorm(cfg.width),
                "mlp": torch.nn.Sequential(torch.nn.Linear(cfg.width, cfg.mlp), torch.nn.GELU(), torch.nn.Linear(cfg.mlp, cfg.width)),
            })
            for _ in range(cfg.layers)
        )
        self.head = torch.nn.Linear(cfg.width, codebook)

    def _split(self, x):
        B, T, D = x.shape
        return x.view(B, T, self.heads, -1).transpose(1, 2)

    @torch.no_grad()
    def generate(self, text, num_tokens: int, guidance: float) -> torch.Tensor:
        B = text.shape[0]
        text = torch.cat([text, torch.zeros_like(text)]) if guidance != 1 else text
        ctx = self.text_proj(text)
        cross = [layer["kv"](ctx).chunk(2, -1) for layer in self.layers]
        cache = [None] * len(self.layers)
        token = torch.full((text.shape[0], 1), self.embed.num_embeddings - 1)
        out = []
        for t in range(num_tokens):
            x = self.embed(token) + self.pos[t]
            for i, layer in enumerate(self.layers):
                q, k, v = layer["qkv"](layer["n1"](x)).chunk(3, -1)
                q, k, v = map(self._split, (q, k, v))
                if cache[i] is not None:
                    k, v = torch.cat([cache[i][0], k], 2), torch.cat([cache[i][1], v], 2)
                cache[i] = (k, v)
                x = x + layer["o"](F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2))
                ck, cv = cross[i]
                x = x + layer["o2"](F.scaled_dot_product_attention(self._split(layer["q"](layer["n2"](x))), self._split(ck), self._split(cv)).transpose(1, 2).flatten(2))
                x = x + layer["mlp"](layer["n3"](x))
            logits = self.head(x[:, -1]).float()
            if guidance != 1:
                cond, uncond = logits.chunk(2)
                logits = uncond + guidance * (cond - uncond)
            token = torch.multinomial(F.softmax(logits, -1), 1)
            out.append(token)
            if guidance != 1:
                token = torch.cat([token, token])
        return torch.cat(out, 1)[:B]


def main(batch: int = 32, repeats: int = 3) -> None:
    cfg = quick(world_codes=False)  # joint codes: what BENCHMARKS.md measures (the presets on your own images)
    width, codebook, text_width = cfg.t2i.model, cfg.vq.model.codebook_size, cfg.lm.model.hidden
    results = {"batch": batch, "model": vars(width), "codebook": codebook}
    # the quick world's 8x8 grid, and the paper's 16x16 (256 px through a 16x downsampling VQ)
    for grid in ((8, 8), (16, 16)):
        torch.manual_seed(0)
        muse = T2IModel(width, codebook, grid, text_width).eval()
        ar = CausalDecoder(width, codebook, grid[0] * grid[1], text_width).eval()
        text = torch.randn(batch, 16, text_width)
        mask = torch.ones(batch, 16, dtype=torch.bool)
        empty, empty_mask = torch.zeros(1, text_width), torch.ones(1, dtype=torch.bool)
        row = {"tokens": grid[0] * grid[1]}
        for steps in (24, 12, 8):
            sampler = SamplerConfig(steps=steps, guidance=4.0)
            median, _ = median_of(lambda: batch / timed(lambda: sample(muse, text, mask, empty, empty_mask, sampler)), repeats)
            row[f"muse_{steps}_steps_images_per_s"] = round(median, 2)
        median, _ = median_of(lambda: batch / timed(lambda: ar.generate(text, grid[0] * grid[1], 4.0)), repeats)
        row["autoregressive_images_per_s"] = round(median, 2)
        row["speedup_muse24_over_ar"] = round(row["muse_24_steps_images_per_s"] / median, 2)
        results[f"grid_{grid[0]}x{grid[1]}"] = row
    save("sampler", results)


if __name__ == "__main__":
    main()
