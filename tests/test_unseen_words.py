"""Training captions with words the paired captions never use (t2i.unseen_words_p)."""

import numpy as np
import pytest
import torch

from synth2.train.unseen_words import CONNECTIVES, caption_variants, insert_words, replace_connectives, unseen_words, words_of

PAIRED = ["red circle", "blue square, large", "green heart red circle"]
CORPUS = ["The red circle sits on the left.", "A blue square; the square is large!", "the heart"]


def test_unseen_words_are_the_corpus_words_no_paired_caption_uses_weighted_by_frequency():
    words, probabilities = unseen_words(PAIRED, CORPUS)
    assert words == ["a", "is", "left", "on", "sits", "the"]  # "heart" is in a paired caption
    assert probabilities.tolist() == pytest.approx([1 / 9] * 5 + [4 / 9])  # "the" 4 times in 9 unseen words
    assert not set(words) & {w for c in PAIRED for w in words_of(c)}


def test_inserted_words_keep_the_caption_in_order_and_add_one_to_max_words():
    words, probabilities = ["the", "of"], np.array([0.5, 0.5])
    rng = np.random.default_rng(0)
    for _ in range(50):
        out = insert_words("large blue square", words, probabilities, 3, rng).split()
        assert 1 <= len(out) - 3 <= 3
        assert [w for w in out if w not in words] == ["large", "blue", "square"]


def test_every_join_of_a_list_can_be_replaced_by_drawn_words_keeping_the_objects_in_order():
    words, probabilities = ["to", "the", "left", "of"], np.full(4, 0.25)
    rng = np.random.default_rng(0)
    caption = "red circle, blue square + green heart and pink star | white background"
    for _ in range(20):
        out = replace_connectives(caption.split(), words, probabilities, 3, 1.0, rng)
        assert not any(t in CONNECTIVES or t.endswith(",") for t in out)
        assert [t for t in out if t not in words] == "red circle blue square green heart pink star white background".split()
        # each of the four joins became 1 to 3 words
        assert 4 <= len(out) - 10 <= 12
    assert replace_connectives(caption.split(), words, probabilities, 3, 0.0, rng) == caption.split()


def test_replaced_joins_are_drawn_before_the_insertions_and_only_when_asked():
    words, probabilities = ["to", "the"], np.array([0.5, 0.5])
    plain = [insert_words("red circle and blue star", words, probabilities, 2, np.random.default_rng(s)) for s in range(30)]
    assert all(" and " in c for c in plain)  # insertion alone keeps the join
    joined = [insert_words("red circle and blue star", words, probabilities, 2, np.random.default_rng(s), connective_p=1.0)
              for s in range(30)]
    assert not any("and" in c.split() for c in joined)
    assert all([w for w in c.split() if w not in words] == ["red", "circle", "blue", "star"] for c in joined)


def test_variants_are_seeded_and_need_words_to_insert():
    words, probabilities = unseen_words(PAIRED, CORPUS)
    first = caption_variants(PAIRED, words, probabilities, variants=3, max_words=4, seed=5)
    assert first == caption_variants(PAIRED, words, probabilities, variants=3, max_words=4, seed=5)
    assert len(first) == 3 and all(len(v) == len(PAIRED) for v in first)
    assert first != caption_variants(PAIRED, words, probabilities, variants=3, max_words=4, seed=6)
    with pytest.raises(ValueError, match="nothing to insert"):
        caption_variants(PAIRED, [], np.array([]), variants=1, max_words=1, seed=0)


def _task(lm_dir, p, variants):
    from synth2.models.lm import FrozenLM
    from synth2.models.t2i import T2IConfig
    from synth2.train.distributed import DistInfo
    from synth2.train.loop import TrainConfig
    from synth2.train.t2i import T2IStageConfig, T2ITask

    from conftest import CAPTIONS

    cfg = T2IStageConfig(model=T2IConfig(width=16, layers=1, heads=2, mlp=32, dropout=0.0), unseen_words_p=p,
                         train=TrainConfig(steps=2, batch_size=64, lr=1e-2, warmup=1, checkpoint_every=1, log_every=1))
    tokens = np.random.default_rng(0).integers(0, 16, (len(CAPTIONS), 4, 4))
    words, probabilities = unseen_words(CAPTIONS, ["the of and with"])
    versions = caption_variants(CAPTIONS, words, probabilities, variants, 4, 0) if variants else None
    return T2ITask(cfg, FrozenLM.from_pretrained(lm_dir), tokens, CAPTIONS, 16, DistInfo(), 0, variants=versions)


def test_a_step_reads_a_variant_with_probability_p_of_the_same_caption(tiny_llama_dir):
    task = _task(tiny_llama_dir, 0.5, variants=3)
    n = len(task.captions)
    replaced = []
    for step in range(20):
        indices = task.indices(step)
        rows = task.text_rows(indices, step)
        assert torch.equal(rows % n, indices) and int(rows.max()) < 4 * n
        assert torch.equal(rows, task.text_rows(indices, step))  # a resumed step reads the same
        replaced.append((rows >= n).float().mean().item())
    assert 0.4 < np.mean(replaced) < 0.6
    ids, text, mask = task.batch(0)
    assert text.shape[0] == ids.shape[0] == 64


def test_without_the_option_every_step_reads_the_captions_as_they_are(tiny_llama_dir):
    task = _task(tiny_llama_dir, 0.0, variants=0)
    assert len(task.text) == len(task.captions)
    indices = task.indices(3)
    assert torch.equal(task.text_rows(indices, 3), indices)


def test_without_text_only_corpora_the_generator_trains_on_the_captions_as_they_are():
    from synth2.stages.generator import unseen_word_variants
    from synth2.train.t2i import T2IStageConfig

    assert unseen_word_variants(T2IStageConfig(unseen_words_p=0.5), PAIRED, {}, seed=0) is None
