import pytest

import torch

from synth2.models.lm import CaptionStates, FrozenLM
from synth2.train.distributed import DistInfo
from synth2.train.lm import LMStageConfig, LMTask, perplexity
from synth2.train.loop import TrainConfig, train

from conftest import CAPTIONS


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_adapter_over_local_models(arch, request):
    lm = FrozenLM.from_pretrained(request.getfixturevalue(f"tiny_{arch}_dir"))
    assert lm.hidden_size == 32 and len(lm.decoder_layers) == 2
    assert all(not p.requires_grad for p in lm.parameters())
    ids, mask = lm.tokenize(["a red circle", "a big blue square on a grey background"], add_eos=True)
    assert (ids[:, 0] == lm.bos_id).all() and ids[0, mask[0].sum() - 1] == lm.eos_id
    states = lm.text_states(ids, mask)
    assert states.shape == (2, ids.shape[1], 32)
    lm.train()
    assert not lm.model.training  # stays frozen in eval mode


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_cached_caption_states_equal_running_the_lm(arch, request):
    lm = FrozenLM.from_pretrained(request.getfixturevalue(f"tiny_{arch}_dir"))
    texts = ["a red circle", "a big blue square on a grey background", "", "two small green stars"]
    cached, live = CaptionStates(lm, texts, batch_size=3), CaptionStates(lm, texts, cache=False)
    for indices in ([0, 1, 2, 3], [3, 0], [2]):
        (states, mask), (live_states, live_mask) = cached[indices], live[indices]
        assert torch.equal(mask, live_mask)
        # padding differs between the LM batches, so compare the real tokens only
        assert torch.allclose(states[mask], live_states[mask], atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_text_states_of_every_layer_equal_the_forwards_hidden_states_without_running_the_layers_above(arch, request):
    lm = FrozenLM.from_pretrained(request.getfixturevalue(f"tiny_{arch}_dir"))
    ids, mask = lm.tokenize(["a red circle", "a big blue square on a grey background"])
    reference = lm.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    ran = []
    lm.decoder_layers[-1].register_forward_pre_hook(lambda module, args: ran.append(True))
    for layer in range(-len(reference), len(reference)):
        ran.clear()
        assert torch.equal(lm.text_states(ids, mask, layer), reference[layer].float()), layer
        assert bool(ran) == (layer % len(reference) == len(reference) - 1), layer  # the top layer runs only when its output is read


def test_empty_text_still_has_a_token(tiny_llama_dir):
    lm = FrozenLM.from_pretrained(tiny_llama_dir)
    ids, mask = lm.tokenize([""])
    assert ids.shape == (1, 1) and mask.all()


def test_a_real_gpt2_tokenizer_without_pad_token_works(tmp_path, tiny_gpt2_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_gpt2_dir)
    tok.pad_token = None
    tok.save_pretrained(tmp_path)
    import shutil

    for f in tiny_gpt2_dir.iterdir():
        if "token" not in f.name and f.suffix in (".json", ".safetensors"):
            shutil.copy(f, tmp_path / f.name)
    lm = FrozenLM.from_pretrained(tmp_path)
    assert lm.pad_id is not None
    ids, mask = lm.tokenize(["a", "a longer caption here"])
    assert ids.shape[0] == 2 and not mask[0].all()


def test_missing_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a Hugging Face model directory"):
        FrozenLM.from_pretrained(tmp_path)


def test_pretraining_lowers_perplexity(tiny_llama_dir, tmp_path):
    lm = FrozenLM.from_pretrained(tiny_llama_dir)
    before = perplexity(lm, CAPTIONS)
    cfg = LMStageConfig(train=TrainConfig(steps=40, batch_size=8, lr=3e-3, warmup=5, checkpoint_every=40, log_every=10))
    train(LMTask(cfg, lm, CAPTIONS, DistInfo(), 0), cfg.train, tmp_path, DistInfo(), "lm")
    lm.model.requires_grad_(False)
    assert perplexity(lm, CAPTIONS) < before * 0.5


def test_a_local_lms_stage_changes_with_the_text_length_and_dtype_every_stage_reads_it_at(tiny_llama_dir, tmp_path):
    from synth2 import api
    from synth2.stages.models import lm

    settings = ([], ["lm.max_text_length=16"], ["lm.dtype=bfloat16"])
    fingerprints = [lm(api.open_run(tmp_path / f"run{i}", preset="tiny", overrides=[f"lm.path={tiny_llama_dir}", *extra])).fingerprint
                    for i, extra in enumerate(settings)]
    assert len(set(fingerprints)) == len(settings)
    # the same settings again: the stage is the same
    assert lm(api.open_run(tmp_path / "again", preset="tiny", overrides=[f"lm.path={tiny_llama_dir}"])).fingerprint == fingerprints[0]
