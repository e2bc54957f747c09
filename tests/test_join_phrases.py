"""The text-only corpora's phrases between two named objects, in place of the paired captions'
joins (t2i.join_phrases_p)."""

import numpy as np
import pytest

from synth2.data.shards import Pair, ShardWriter
from synth2.errors import UserError
from synth2.stages.generator import unseen_word_variants
from synth2.train.join_phrases import JoinPhrases, join_phrases, objects
from synth2.train.t2i import T2IStageConfig
from synth2.train.unseen_words import caption_variants, unseen_words

CORPUS = [
    "This graphic shows a large green circle and a blue moon on a dark background. The green circle is below the blue moon.",
    "a red heart, a small pink star and a cyan ring against grey",
    "The circle sits in the bottom right corner.",
    "image of a purple round dot and a yellow plus sign on black",
]


def test_objects_are_an_article_size_and_colour_words_ending_in_a_shape_word():
    text = "tiny cyan round dot + a large square | dark blue background, three shapes"
    assert [text[s:e] for s, e in objects(text)] == ["tiny cyan round dot", "a large square"]


def test_join_phrases_are_what_stands_between_two_objects_of_a_sentence_weighted_by_frequency():
    phrases, probabilities = join_phrases(CORPUS)
    # "and" three times; "," and "is below" once each: an article belongs to the object after it.
    # Between sentences ("moon. The green circle") and before a background ("on a dark
    # background") is no join.
    assert phrases == [",", "and", "is below"]
    assert probabilities.tolist() == pytest.approx([1 / 5, 3 / 5, 1 / 5])
    assert join_phrases(CORPUS[::-1])[0] == phrases
    assert join_phrases(CORPUS, max_words=1)[0] == [",", "and"]


def test_reword_replaces_only_joins_between_two_objects_and_keeps_the_rest_to_the_character():
    joins = JoinPhrases(["is to the left of", ","], np.array([0.5, 0.5]), p=1.0)
    rng = np.random.default_rng(0)
    caption = "stock image Red circle + tiny blue star and a green heart | gray background"
    outs = {joins.reword(caption, rng) for _ in range(40)}
    assert len(outs) == 4  # two joins, each one of two phrases
    for out in outs:
        assert out.startswith("stock image Red circle") and out.endswith("green heart | gray background")
        assert "+" not in out
        assert [out.lower()[s:e] for s, e in objects(out.lower())] == ["red circle", "tiny blue star", "a green heart"]
    assert "stock image Red circle is to the left of tiny blue star, a green heart | gray background" in outs
    assert joins.reword("pink block on gray, flat design", rng) == "pink block on gray, flat design"
    assert JoinPhrases(["and"], np.array([1.0]), p=0.0).reword(caption, rng) == caption


def test_variants_reword_joins_only_when_asked_and_stay_seeded():
    paired = ["red circle + blue star", "green heart"]
    words, probabilities = unseen_words(paired, CORPUS)
    joins = JoinPhrases(*join_phrases(CORPUS), p=1.0)
    plain = caption_variants(paired, words, probabilities, variants=4, max_words=1, seed=3)
    reworded = caption_variants(paired, words, probabilities, variants=4, max_words=1, seed=3, joins=joins)
    assert all("+" in v[0] for v in plain) and not any("+" in v[0] for v in reworded)
    assert reworded == caption_variants(paired, words, probabilities, variants=4, max_words=1, seed=3, joins=joins)


def test_the_stage_reads_the_joins_from_the_text_only_corpora(tmp_path):
    corpus = tmp_path / "ltip"
    with ShardWriter(corpus, prefix="ltip") as writer:  # a text-only corpus: captions, no images
        for i, caption in enumerate(CORPUS):
            writer.write(Pair(f"ltip_{i}", caption))
    cfg = T2IStageConfig(unseen_words_p=0.5, unseen_word_variants=20, join_phrases_p=1.0)
    variants = unseen_word_variants(cfg, ["red circle + blue star"], {"ltip": str(corpus)}, seed=0)
    assert not any("+" in v[0] for v in variants)
    assert any("below" in v[0].split() for v in variants)  # a fifth of the joins


def test_joins_without_the_versions_they_reword_are_refused():
    with pytest.raises(UserError, match="t2i.join_phrases_p rewords the versions t2i.unseen_words_p draws"):
        unseen_word_variants(T2IStageConfig(unseen_words_p=0.0, join_phrases_p=0.5), ["red circle + blue star"], {}, seed=0)
