
import json
import numpy as np
import pytest
import torch
from ddp import run_ddp
from resume import assert_resume_equals_uninterrupted
import torch.nn.functional as F

from synth2.models.decode import beam_search, decode_texts, greedy
from synth2.models.lm import FrozenLM
from synth2.models.vlm import VLM, VLMConfig, caption_loss
from synth2.models.vq import VQConfig, VQModel
from synth2.train.distributed import DistInfo
from synth2.train.loop import TrainConfig, train
from synth2.train.vlm import SourceConfig, SourceData, VLMStageConfig, VLMTask, batch_shares, encode_captions

from conftest import CAPTIONS

VQ = VQConfig(channels=8, channel_mult=[1], patch_size=4, num_res_blocks=1, mid_blocks=0, norm="none", latent_dim=8, codebook_size=16, codebook_dim=4, kmeans_init=False)
CFG = VLMConfig(width=16, perceiver_layers=1, latents=4, heads=2, ff_mult=2, xattn_every=1, xattn_heads=2)


def make_vlm(lm_dir, seed=0, gates=None):
    torch.manual_seed(seed)
    vq = VQModel(VQ).eval()
    vlm = VLM(CFG, FrozenLM.from_pretrained(lm_dir), vq, (4, 4))
    if gates is not None:
        for block in vlm.xattn:
            block.attn_gate.data.fill_(gates)
            block.ff_gate.data.fill_(gates)
    return vlm


def batch(vlm, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids, mask, labels = encode_captions(vlm.lm, [""] * n, CAPTIONS[:n], 32)
    return ids, mask, labels, torch.randint(0, 16, (n, 4, 4), generator=g)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_with_closed_gates_the_vlm_is_the_frozen_lm(arch, request):
    vlm = make_vlm(request.getfixturevalue(f"tiny_{arch}_dir"))
    ids, mask, labels, tokens = batch(vlm)
    lm_logits = vlm.lm.model(input_ids=ids, attention_mask=mask).logits
    text_only = F.cross_entropy(lm_logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    assert torch.allclose(caption_loss(vlm, ids, mask, labels, tokens), text_only, atol=1e-6)
    # and opening them makes the image matter
    for block in vlm.xattn:
        block.attn_gate.data.fill_(1.0)
    assert not torch.allclose(caption_loss(vlm, ids, mask, labels, tokens), text_only, atol=1e-4)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_vlms_sharing_one_frozen_lm_each_run_and_train_their_own_blocks(arch, request):
    """The pipeline trains every arm on one loaded LM: a second VLM must not run the first's blocks."""
    torch.manual_seed(0)
    lm = FrozenLM.from_pretrained(request.getfixturevalue(f"tiny_{arch}_dir"))
    first, second = (VLM(CFG, lm, VQModel(VQ).eval(), (4, 4)) for _ in range(2))
    for block in first.xattn:
        block.attn_gate.data.fill_(1.0)
    ids, mask, labels, tokens = batch(second)
    lm_logits = lm.model(input_ids=ids, attention_mask=mask).logits
    text_only = F.cross_entropy(lm_logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    # the second VLM's gates are closed: it is the frozen LM, whatever the first one's gates are
    loss = caption_loss(second, ids, mask, labels, tokens)
    assert torch.allclose(loss, text_only, atol=1e-6)
    loss.backward()
    assert all(block.attn_gate.grad is not None and block.attn_gate.grad.abs().item() > 0 for block in second.xattn)
    assert all(block.attn_gate.grad is None for block in first.xattn)
    assert not torch.allclose(caption_loss(first, ids, mask, labels, tokens), text_only, atol=1e-4)


def test_lm_weights_are_untouched_and_not_trained(tiny_llama_dir):
    vlm = make_vlm(tiny_llama_dir, gates=0.5)
    before = {k: v.clone() for k, v in vlm.lm.model.state_dict().items()}
    ids, mask, labels, tokens = batch(vlm)
    caption_loss(vlm, ids, mask, labels, tokens).backward()
    assert all(p.grad is None for p in vlm.lm.parameters()) and all(p.grad is None for p in vlm.vq.parameters())
    assert vlm.xattn[0].attn_gate.grad is not None
    assert all(torch.equal(before[k], v) for k, v in vlm.lm.model.state_dict().items())
    # without the keyword the LM is called exactly as before: the hooks pass through
    out = vlm.lm.model(input_ids=ids, attention_mask=mask).logits
    assert torch.isfinite(out).all()


def test_labels_cover_only_the_caption_and_eos(tiny_llama_dir):
    lm = FrozenLM.from_pretrained(tiny_llama_dir)
    ids, mask, labels = encode_captions(lm, ["<llm>", ""], ["a red circle", "a blue star"], 32)
    prompt_len = 1 + len(lm.token_ids("<llm>"))
    assert (labels[0, :prompt_len] == -100).all() and labels[1, 0] == -100
    assert labels[0, mask[0].sum() - 1] == lm.eos_id
    assert (labels[~mask] == -100).all()


# the cache goes in under the LM's own keyword: transformers 5 warns on the old `past_key_values`
@pytest.mark.filterwarnings("error::FutureWarning")
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_cached_greedy_equals_recomputing_the_prefix(arch, request):
    vlm = make_vlm(request.getfixturevalue(f"tiny_{arch}_dir"), gates=1.0)
    tokens = torch.randint(0, 16, (3, 4, 4), generator=torch.Generator().manual_seed(1))
    fast = greedy(vlm, tokens, max_new_tokens=8)
    condition = vlm.condition(tokens)
    for i in range(3):
        ids = torch.tensor([[vlm.lm.bos_id]])
        slow = []
        for _ in range(8):
            logits = vlm(ids, torch.ones_like(ids, dtype=torch.bool), condition=type(condition)(condition.latents_BMW[i : i + 1], condition.owner)).logits
            nxt = int(logits[0, -1].argmax())
            if nxt == vlm.lm.eos_id:
                break
            slow.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
        assert fast[i] == slow


@pytest.mark.filterwarnings("error::FutureWarning")
def test_beam_search(tiny_llama_dir):
    vlm = make_vlm(tiny_llama_dir, gates=1.0)
    tokens = torch.randint(0, 16, (2, 4, 4), generator=torch.Generator().manual_seed(2))
    assert beam_search(vlm, tokens, beams=1, max_new_tokens=6) == greedy(vlm, tokens, max_new_tokens=6)
    beams = beam_search(vlm, tokens, beams=3, max_new_tokens=6)
    assert len(beams) == 2 and all(isinstance(t, int) for b in beams for t in b)
    assert all(isinstance(t, str) for t in decode_texts(vlm, beams))


def test_batch_shares():
    sources = [SourceConfig(weight=1.0), SourceConfig(weight=0.5), SourceConfig(weight=0.5)]
    assert batch_shares(sources, 8) == [4, 2, 2]
    assert sum(batch_shares(sources, 7)) == 7
    with pytest.raises(ValueError):
        batch_shares([SourceConfig(weight=0.0)], 4)


def _task(lm_dir, seed=0, dist=DistInfo(), space="embedding", on_the_fly=False, parallel="ddp", accumulate=1, captions=CAPTIONS):
    vlm = make_vlm(lm_dir, seed=seed)
    rng = np.random.default_rng(0)
    real = SourceData("paired", SourceConfig(kind="real", data="paired"), captions, rng.integers(0, 16, (len(captions), 4, 4)))
    cached = None if on_the_fly else rng.integers(0, 16, (10, 2, 4, 4))
    synth = SourceData("llm", SourceConfig(kind="synthetic", data="llm", prompt="<llm>"), captions[:10], cached)
    cfg = VLMStageConfig(model=CFG, train=TrainConfig(steps=6, batch_size=8, lr=1e-2, warmup=1, checkpoint_every=3, log_every=1, parallel=parallel, accumulate=accumulate))
    generator = _token_generator(vlm.lm) if on_the_fly else None
    return VLMTask(cfg, vlm, [real, synth], dist, seed, generator, space=space), cfg


def _token_generator(lm):
    """A tiny untrained generator over the VLM's 16-code VQ, sampling at temperature 1."""
    from synth2.models.sampler import SamplerConfig
    from synth2.models.t2i import T2IConfig, T2IModel
    from synth2.synthesis import TokenGenerator

    torch.manual_seed(1)
    model = T2IModel(T2IConfig(width=16, layers=1, heads=2, mlp=32, dropout=0.0), 16, (4, 4), lm.hidden_size)
    return TokenGenerator(lm, model, SamplerConfig(steps=2, guidance=1.0, temperature=1.0))


def test_on_the_fly_synthesis_draws_a_fresh_grid_each_step_and_the_same_after_resume(tiny_llama_dir, tmp_path):
    task, cfg = _task(tiny_llama_dir, on_the_fly=True)
    synthetic = task.sources[1]
    captions = np.arange(4)  # the same four captions, drawn at two steps
    at_step_2, at_step_5 = task._tokens(synthetic, captions, 2, 1), task._tokens(synthetic, captions, 5, 1)
    assert not torch.equal(at_step_2, at_step_5)
    fresh, _ = _task(tiny_llama_dir, on_the_fly=True)
    assert torch.equal(fresh._tokens(fresh.sources[1], captions, 5, 1), at_step_5)  # as a resumed run draws them
    assert_resume_equals_uninterrupted(lambda: _task(tiny_llama_dir, on_the_fly=True)[0], cfg.train, tmp_path, "vlm", stop_after=3)


def test_resume_equals_uninterrupted(tiny_llama_dir, tmp_path):
    _, cfg = _task(tiny_llama_dir)
    assert_resume_equals_uninterrupted(lambda: _task(tiny_llama_dir)[0], cfg.train, tmp_path, "vlm", stop_after=3)


def test_pixel_space_re_encodes_synthetic_tokens(tiny_llama_dir):
    emb, _ = _task(tiny_llama_dir)
    pix, _ = _task(tiny_llama_dir, space="pixel")
    _, _, _, tokens_e = emb.batch(0)
    _, _, _, tokens_p = pix.batch(0)
    assert tokens_e.shape == tokens_p.shape
    assert torch.equal(tokens_e[:4], tokens_p[:4])  # real pairs stay as encoded


def _train_in_ddp(dist, lm_dir, out):
    from synth2.train.loop import train

    task, cfg = _task(lm_dir, dist=dist)
    train(task, cfg.train, out / "ddp", dist, "vlm")
    if dist.is_main:
        torch.save(task.modules["vlm"].state_dict(), out / "ddp.pt")


def test_two_ddp_processes_match_one_with_the_same_global_batch(tiny_llama_dir, tmp_path):
    run_ddp(_train_in_ddp, tiny_llama_dir, tmp_path)
    single, cfg = _task(tiny_llama_dir)
    train(single, cfg.train, tmp_path / "single", DistInfo(), "vlm")
    ddp_state = torch.load(tmp_path / "ddp.pt")
    # Adam normalises the near-zero gradients behind the zero-initialised gates, so float
    # reduction-order noise shows up at ~1e-5 after 6 steps of lr 1e-2 (each step moves ~1e-2)
    for name, value in single.modules["vlm"].state_dict().items():
        assert torch.allclose(value, ddp_state[name], atol=1e-4), (name, (value - ddp_state[name]).abs().max())


def _resume_past_a_planted_sharded_checkpoint(dist, lm_dir, out):
    import pickle

    from test_faults import _Planted

    from synth2.train.sharded import full_state_dict

    task, cfg = _task(lm_dir, dist=dist, parallel="fsdp")
    train(task, cfg.train, out / "run", dist, "vlm")  # checkpoints at steps 3 and 6
    whole = full_state_dict(task.modules["vlm"])
    if dist.is_main:
        (out / "run" / "checkpoints" / "step-6" / "dcp" / ".metadata").write_bytes(pickle.dumps(_Planted(out / "pwned"), protocol=2))
    torch.distributed.barrier()
    resumed, _ = _task(lm_dir, dist=dist, parallel="fsdp")
    torch.manual_seed(999)  # the checkpoint restores every rank's RNG
    train(resumed, cfg.train, out / "run", dist, "vlm")  # from step 3, to step 6 again
    state = full_state_dict(resumed.modules["vlm"])
    if dist.is_main:
        torch.save({"whole": whole, "resumed": state}, out / "states.pt")


def test_a_planted_sharded_checkpoint_runs_nothing_and_the_run_resumes_from_the_one_before(tiny_llama_dir, tmp_path):
    """DCP's own reader unpickles `.metadata` as it is; a planted one must neither run nor stop the
    run: every rank falls back to step 3, sets step 6 aside, and trains to the same weights."""
    run_ddp(_resume_past_a_planted_sharded_checkpoint, tiny_llama_dir, tmp_path)
    assert not (tmp_path / "pwned").exists()
    checkpoints = tmp_path / "run" / "checkpoints"
    assert (checkpoints / "step-6.corrupt").is_dir() and (checkpoints / "step-6" / "dcp").is_dir()  # set aside, then written again
    states = torch.load(tmp_path / "states.pt")
    for name, value in states["whole"].items():
        assert torch.equal(value, states["resumed"][name]), name


def _train_accumulating(dist, lm_dir, out, parallel, accumulate):
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    from synth2.train.loop import train
    from synth2.train.sharded import full_state_dict

    # captions of one length, so a micro-batch's token mean weighs as the whole batch's does
    task, cfg = _task(lm_dir, dist=dist, parallel=parallel, accumulate=accumulate, captions=[CAPTIONS[0]] * len(CAPTIONS))
    calls = []

    def counting_allreduce(state, bucket):
        calls.append(bucket.index())
        return allreduce_hook(None, bucket)

    if parallel == "ddp":
        task.ddp.register_comm_hook(None, counting_allreduce)
    train(task, cfg.train, out / f"{parallel}{accumulate}", dist, "vlm")
    state = full_state_dict(task.modules["vlm"]) if parallel == "fsdp" else task.modules["vlm"].state_dict()
    if dist.is_main:
        torch.save({"calls": len(calls), "state": state}, out / f"{parallel}{accumulate}.pt")


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_accumulated_micro_batches_reduce_gradients_once_per_step(tiny_llama_dir, tmp_path, parallel):
    run_ddp(_train_accumulating, tiny_llama_dir, tmp_path, parallel, 1)
    run_ddp(_train_accumulating, tiny_llama_dir, tmp_path, parallel, 2)
    whole, accumulated = torch.load(tmp_path / f"{parallel}1.pt"), torch.load(tmp_path / f"{parallel}2.pt")
    if parallel == "ddp":
        assert whole["calls"] > 0 and accumulated["calls"] == whole["calls"]  # without no_sync: twice as many
    for name, value in whole["state"].items():
        assert torch.allclose(value, accumulated["state"][name], atol=1e-4), name


def test_a_detached_vlm_leaves_the_lm_as_it_was_and_refuses_to_run(tiny_llama_dir):
    vlm = make_vlm(tiny_llama_dir, gates=1.0)
    ids, mask, labels, tokens = batch(vlm)
    lm_logits = vlm.lm.model(input_ids=ids, attention_mask=mask).logits
    hooked = sum(len(layer._forward_pre_hooks) for layer in vlm.lm.decoder_layers)
    vlm.detach()
    assert sum(len(layer._forward_pre_hooks) for layer in vlm.lm.decoder_layers) == hooked - len(vlm.lm.decoder_layers)
    assert torch.equal(vlm.lm.model(input_ids=ids, attention_mask=mask).logits, lm_logits)
    with pytest.raises(RuntimeError, match="detached"):
        vlm.condition(tokens)


def test_dropout_acts_on_the_trainable_branches_only_in_training(tiny_gpt2_dir):
    vlm = make_vlm(tiny_gpt2_dir, gates=1.0).train()
    ids, mask, labels, tokens = batch(vlm)
    assert torch.equal(caption_loss(vlm, ids, mask, labels, tokens), caption_loss(vlm, ids, mask, labels, tokens))  # 0 by default
    vlm.set_dropout(0.5)
    assert not torch.equal(caption_loss(vlm, ids, mask, labels, tokens), caption_loss(vlm, ids, mask, labels, tokens))
    assert all(m.p != 0.5 for m in vlm.lm.modules() if isinstance(m, torch.nn.Dropout))  # the frozen LM is left alone
    vlm.eval()
    assert torch.equal(caption_loss(vlm, ids, mask, labels, tokens), caption_loss(vlm, ids, mask, labels, tokens))


def _evaluate_in_ddp(dist, out):
    from types import SimpleNamespace

    from synth2.progress import MetricsWriter
    from synth2.train.loop import _evaluate

    def evaluate(step):
        (out / f"evaluated_by_rank{dist.rank}").write_text(str(step))
        return {"cider_a": 0.5}

    result = _evaluate(evaluate, 10, SimpleNamespace(modules={}), MetricsWriter(out / f"metrics{dist.rank}.jsonl"), dist)
    (out / f"result_rank{dist.rank}.json").write_text(json.dumps(result))


def test_under_ddp_rank_0_alone_evaluates(tmp_path):
    run_ddp(_evaluate_in_ddp, tmp_path)
    assert sorted(p.name for p in tmp_path.glob("evaluated_by_*")) == ["evaluated_by_rank0"]
    assert json.loads((tmp_path / "result_rank0.json").read_text()) == {"cider_a": 0.5}
    assert json.loads((tmp_path / "result_rank1.json").read_text()) == {}


def _train_in_fsdp(dist, lm_dir, out):
    from synth2.train.loop import train
    from synth2.train.sharded import full_state_dict

    whole, cfg = _task(lm_dir, dist=dist, parallel="fsdp")
    result = train(whole, cfg.train, out / "whole", dist, "vlm")
    state = full_state_dict(whole.modules["vlm"])
    interrupted, _ = _task(lm_dir, dist=dist, parallel="fsdp")
    train(interrupted, cfg.train, out / "split", dist, "vlm", stop_after=3)
    resumed, _ = _task(lm_dir, dist=dist, parallel="fsdp")
    torch.manual_seed(999)  # the checkpoint restores every rank's RNG
    resumed_result = train(resumed, cfg.train, out / "split", dist, "vlm")
    resumed_state = full_state_dict(resumed.modules["vlm"])
    if dist.is_main:
        torch.save({"whole": state, "resumed": resumed_state}, out / "fsdp.pt")
        (out / "fsdp_metrics.json").write_text(json.dumps([result.last_metrics, resumed_result.last_metrics]))


def test_fsdp_on_two_processes_matches_one_and_resumes_exactly(tiny_llama_dir, tmp_path):
    """FSDP2 shards on 2 gloo processes: the same weights as one process with the same global
    batch, and a run stopped at step 3 and resumed from its sharded checkpoint equals one that
    never stopped."""
    run_ddp(_train_in_fsdp, tiny_llama_dir, tmp_path)
    single, cfg = _task(tiny_llama_dir)
    train(single, cfg.train, tmp_path / "single", DistInfo(), "vlm")
    saved = torch.load(tmp_path / "fsdp.pt")
    for name, value in single.modules["vlm"].state_dict().items():
        assert torch.allclose(value, saved["whole"][name], atol=1e-4), (name, (value - saved["whole"][name]).abs().max())
        assert torch.equal(saved["whole"][name], saved["resumed"][name]), name
    whole_metrics, resumed_metrics = json.loads((tmp_path / "fsdp_metrics.json").read_text())
    assert whole_metrics == resumed_metrics
    assert (tmp_path / "split" / "checkpoints" / "step-6" / "dcp").is_dir()  # sharded, through torch.distributed.checkpoint
