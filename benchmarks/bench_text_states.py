"""How much does reading the generator's text states cost: the word embeddings (layer 0, the
generator's `text_layer` on every preset but `paper`) against the LM's last layer?

`FrozenLM.text_states` stops the forward at the layer it reads, so layer 0 runs no decoder
layer. The quick preset's embedded LM (untrained: the cost does not depend on the weights), 512
captions of the world's kind in one batch, one torch thread. Median of 5.

    cd benchmarks && ../.venv/bin/python bench_text_states.py
"""

from __future__ import annotations

import itertools

import torch
from common import median_of, save, timed

from synth2.config import quick
from synth2.models.lm import FrozenLM, build_embedded_lm, train_tokenizer

SIZES, COLOURS = ("small", "large"), ("red", "blue", "green", "yellow")
SHAPES = ("circle", "square", "heart", "star")


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = quick()
    captions = [f"a {s} {c} {h} and a {c2} {h2} against a grey backdrop"
                for s, c, h, c2, h2 in itertools.product(SIZES, COLOURS, SHAPES, COLOURS, SHAPES)][:512]
    tokenizer = train_tokenizer(captions, cfg.lm.model.vocab_size)
    lm = FrozenLM(build_embedded_lm(cfg.lm.model, tokenizer), tokenizer, cfg.lm.max_text_length)
    ids, mask = lm.tokenize(captions)
    seconds = {}
    for layer in (0, -1):
        seconds[layer], _ = median_of(lambda: timed(lambda: lm.text_states(ids, mask, layer)), 5)
    save("text_states", {"captions": len(captions), "layer0_ms": 1000 * seconds[0], "last_layer_ms": 1000 * seconds[-1],
                         "last_over_layer0": seconds[-1] / seconds[0]})


if __name__ == "__main__":
    main()
