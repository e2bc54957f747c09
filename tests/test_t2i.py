import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ddp import run_ddp
from resume import assert_resume_equals_uninterrupted

from synth2.config import preset
from synth2.configtools import ConfigError, apply_overrides
from synth2.models.sampler import SamplerConfig, masked_after, sample
from synth2.models.t2i import Attention, Block, CaptionPointer, T2IConfig, T2IModel, drop_text, masked_prediction_loss, random_mask
from synth2.errors import UserError
from synth2.stages.generator import sampling_weights
from synth2.train.t2i import T2IStageConfig, background_weights


def tiny_model(seed=0, codebook=32, grid=(4, 4), text_width=8):
    torch.manual_seed(seed)
    return T2IModel(T2IConfig(width=16, layers=2, heads=2, mlp=32, dropout=0.0), codebook, grid, text_width).eval()


def test_mean_masked_share_is_two_over_pi():
    g = torch.Generator().manual_seed(0)
    share = random_mask(20000, 64, g).float().mean().item()
    # E[ceil(cos(pi r / 2) * N)] / N is 2/pi plus at most 1/N of rounding
    assert 2 / math.pi - 0.01 < share < 2 / math.pi + 1 / 64 + 0.01


@pytest.mark.parametrize("schedule, mean_share", [("linear", 1 / 2), ("square", 2 / 3)])
def test_other_schedules_mask_their_mean_share(schedule, mean_share):
    g = torch.Generator().manual_seed(0)
    share = random_mask(20000, 64, g, schedule=schedule).float().mean().item()
    assert mean_share - 0.01 < share < mean_share + 1 / 64 + 0.01


def test_decoding_keeps_the_schedules_share_masked_after_each_step():
    # cosine reveals few tokens first: 2 of 64 in the first of 8 steps, 12 in the last
    assert [masked_after(t, 8, 64) for t in range(1, 9)] == [62, 59, 53, 45, 35, 24, 12, 0]
    assert [masked_after(t, 8, 64, "linear") for t in range(1, 9)] == [56, 48, 40, 32, 24, 16, 8, 0]
    assert [masked_after(t, 4, 64, "square") for t in range(1, 5)] == [60, 48, 28, 0]
    with pytest.raises(ValueError, match="mask schedule must be one of"):
        masked_after(1, 8, 64, "cubic")


def test_every_example_masks_at_least_one_token():
    g = torch.Generator().manual_seed(1)
    assert random_mask(5000, 4, g).sum(1).min().item() >= 1


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 1.0])
def test_guidance_dropout_drops_text_with_probability_p(p):
    B, L, C = 20000, 3, 4
    text = torch.ones(B, L, C)
    mask = torch.ones(B, L, dtype=torch.bool)
    empty, empty_mask = torch.zeros(1, C), torch.ones(1, dtype=torch.bool)
    out, out_mask, dropped = drop_text(text, mask, empty, empty_mask, p, torch.Generator().manual_seed(2))
    assert abs(dropped.float().mean().item() - p) < 0.015
    # dropped rows are exactly the empty caption (padded), kept rows exactly the caption
    assert torch.equal(out[dropped, 0], torch.zeros(int(dropped.sum()), C))
    assert not out_mask[dropped, 1:].any()
    assert torch.equal(out[~dropped], text[~dropped])


def _texts(model, batch=3, length=5, seed=3):
    g = torch.Generator().manual_seed(seed)
    text = torch.randn(batch, length, 8, generator=g)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, 3:] = False
    empty = torch.randn(1, 8, generator=g)
    return text, mask, empty, torch.ones(1, dtype=torch.bool)


def test_one_step_with_guidance_zero_is_the_unconditional_argmax():
    model = tiny_model()
    text, mask, empty, empty_mask = _texts(model)
    ids = sample(model, text, mask, empty, empty_mask, SamplerConfig(steps=1, guidance=0.0, temperature=0.0))
    all_masked = torch.full((3, 16), model.mask_id)
    expected = model(all_masked, empty.expand(3, 1, 8), empty_mask.expand(3, 1)).argmax(-1)
    assert torch.equal(ids, expected)


def test_one_step_with_guidance_one_is_the_conditional_argmax():
    model = tiny_model()
    text, mask, empty, empty_mask = _texts(model)
    ids = sample(model, text, mask, empty, empty_mask, SamplerConfig(steps=1, guidance=1.0, temperature=0.0))
    expected = model(torch.full((3, 16), model.mask_id), text, mask).argmax(-1)
    assert torch.equal(ids, expected)


def test_sampler_is_deterministic_for_a_seed_and_fills_every_token():
    model = tiny_model()
    text, mask, empty, empty_mask = _texts(model)
    cfg = SamplerConfig(steps=6, guidance=4.0, temperature=1.0, choice_temperature=4.5)
    a = sample(model, text, mask, empty, empty_mask, cfg, torch.Generator().manual_seed(7))
    b = sample(model, text, mask, empty, empty_mask, cfg, torch.Generator().manual_seed(7))
    c = sample(model, text, mask, empty, empty_mask, cfg, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert (a < model.codebook_size).all()


class _EveryStepWhole(T2IModel):
    """The same generator as every decoding step would run it whole: the caption's side computed
    again and the head run on every token, the selected tokens' logits picked out after."""

    def forward(self, ids_BN, text_BLC, text_mask_BL, choose=None, only_BN=None, context=None):
        logits = super().forward(ids_BN, text_BLC, text_mask_BL)
        logits = logits if only_BN is None else logits[only_BN]
        return logits if choose is None else ([logits], [choose(0, logits)])


@pytest.mark.parametrize("guidance, temperature", [(1.0, 0.0), (3.0, 0.0), (2.0, 1.0)])
def test_decoding_runs_the_head_on_the_unknown_tokens_and_the_caption_once_and_draws_what_whole_steps_draw(guidance, temperature):
    model = tiny_model()
    text, mask, empty, empty_mask = _texts(model)
    cfg = SamplerConfig(steps=6, guidance=guidance, temperature=temperature, choice_temperature=4.5)
    unknown, head_rows, text_passes = [], [], []
    model.register_forward_pre_hook(lambda module, args: unknown.append(int((args[0] == module.mask_id).sum())))
    model.head.register_forward_hook(lambda module, args, out: head_rows.append(args[0].shape[0]))
    model.text_proj.register_forward_hook(lambda module, args, out: text_passes.append(1))
    ids = sample(model, text, mask, empty, empty_mask, cfg, torch.Generator().manual_seed(7))
    assert head_rows == unknown and unknown == sorted(unknown, reverse=True) and unknown[-1] < unknown[0]
    assert len(text_passes) == 1 and len(unknown) == cfg.steps
    every = _EveryStepWhole(model.cfg, model.codebook_size, model.grid, 8)
    every.load_state_dict(model.state_dict())
    assert torch.equal(ids, sample(every.eval(), text, mask, empty, empty_mask, cfg, torch.Generator().manual_seed(7)))


def test_padding_in_the_text_is_ignored():
    model = tiny_model()
    text, mask, _, _ = _texts(model)
    ids = torch.randint(0, 32, (3, 16))
    a = model(ids, text, mask)
    text2 = text.clone()
    text2[0, 3:] = 100.0  # padded positions of caption 0
    assert torch.allclose(a, model(ids, text2, mask), atol=1e-6)


def test_golden_logits_of_a_tiny_seeded_model():
    model = tiny_model(seed=123)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 33, (2, 16), generator=g)
    text = torch.randn(2, 4, 8, generator=g)
    logits = model(ids, text, torch.ones(2, 4, dtype=torch.bool))
    golden = torch.tensor(GOLDEN_T2I)
    assert torch.allclose(logits[0, 0, :6], golden, atol=1e-4), logits[0, 0, :6].tolist()


GOLDEN_T2I = [0.8089858, 1.2103450, 0.1586335, -0.3583031, 0.0286013, 0.3967308]  # recorded from this implementation


def test_loss_is_on_masked_positions_only():
    model = tiny_model()
    ids = torch.randint(0, 32, (4, 16))
    text, mask, _, _ = _texts(model, batch=4)
    g = torch.Generator().manual_seed(5)
    loss, acc, share = masked_prediction_loss(model, ids, text, mask, g)
    loss.backward()
    assert 0 < share.item() <= 1 and torch.isfinite(loss)


def test_the_loss_runs_the_head_on_the_masked_tokens_and_equals_the_loss_over_every_tokens_logits():
    model = tiny_model()
    ids = torch.randint(0, 32, (4, 16))
    text, mask, _, _ = _texts(model, batch=4)
    token_mask = random_mask(4, 16, torch.Generator().manual_seed(5))
    heads_rows = []
    model.head.register_forward_hook(lambda module, args, out: heads_rows.append(args[0].shape[0]))
    loss, accuracy, _ = masked_prediction_loss(model, ids, text, mask, mask_BN=token_mask)
    assert heads_rows == [int(token_mask.sum())]  # one pass, over the masked tokens only
    logits = model(ids.masked_fill(token_mask, model.mask_id), text, mask)[token_mask]
    assert torch.allclose(loss, F.cross_entropy(logits, ids[token_mask]), atol=1e-6)
    assert accuracy.item() == (logits.argmax(-1) == ids[token_mask]).float().mean().item()


def test_text_blocks_read_later_words_and_ignore_padding():
    torch.manual_seed(0)
    block = Block(T2IConfig(width=16, heads=2, mlp=32, dropout=0.0), text_width=None).eval()
    text = torch.randn(1, 5, 16)
    mask = torch.tensor([[True, True, True, False, False]])
    out = block(text, None, mask)
    later_word = text.clone()
    later_word[0, 2] = torch.randn(16)
    padding = text.clone()
    padding[0, 3:] = 100.0
    assert not torch.allclose(out[0, 0], block(later_word, None, mask)[0, 0], atol=1e-4)  # bidirectional
    assert torch.allclose(out[0, :3], block(padding, None, mask)[0, :3], atol=1e-6)


def test_a_generator_with_text_blocks_ignores_padding():
    torch.manual_seed(0)
    model = T2IModel(T2IConfig(width=16, layers=1, heads=2, mlp=32, dropout=0.0, text_blocks=2), 32, (4, 4), 8).eval()
    text, mask, _, _ = _texts(model)
    ids = torch.randint(0, 32, (3, 16))
    text2 = text.clone()
    text2[0, 3:] = 100.0
    assert len(model.text_blocks) == 2
    assert torch.allclose(model(ids, text, mask), model(ids, text2, mask), atol=1e-5)


@pytest.mark.parametrize("weights", ["softmax", "sigmoid"])
def test_sigmoid_cross_attention_sums_what_softmax_averages(weights):
    torch.manual_seed(0)
    attention = Attention(16, 2, context_width=8, weights=weights)
    x = torch.randn(1, 3, 16)
    word = torch.randn(1, 1, 8)
    once = attention(x, word, torch.ones(1, 1, dtype=torch.bool))
    twice = attention(x, word.repeat(1, 2, 1), torch.ones(1, 2, dtype=torch.bool))
    padded = attention(x, torch.cat([word, torch.full((1, 1, 8), 100.0)], 1), torch.tensor([[True, False]]))
    # a mean over one word or two copies of it is the same; a sum of gated values doubles (before
    # the output layer's bias)
    expected = once if weights == "softmax" else 2 * once - attention.out.bias
    assert torch.allclose(twice, expected, atol=1e-5)
    assert torch.allclose(padded, once, atol=1e-6)


def test_a_generator_with_sigmoid_cross_attention_ignores_padding_and_trains():
    torch.manual_seed(0)
    model = T2IModel(T2IConfig(width=16, layers=1, heads=2, mlp=32, dropout=0.0, cross_attention="sigmoid"), 32, (4, 4), 8)
    text, mask, _, _ = _texts(model)
    ids = torch.randint(0, 32, (3, 16))
    text2 = text.clone()
    text2[0, 3:] = 100.0
    assert torch.allclose(model(ids, text, mask), model(ids, text2, mask), atol=1e-6)
    loss, _, _ = masked_prediction_loss(model, ids, text, mask, torch.Generator().manual_seed(1))
    loss.backward()
    assert model.blocks[0].cross_attn.gate_bias.grad.abs().sum() > 0


def test_an_unknown_attention_weighting_is_refused_in_the_config_and_by_the_model():
    with pytest.raises(ConfigError, match="t2i.model.cross_attention: 'relu' is not one of"):
        apply_overrides(preset("quick"), ["t2i.model.cross_attention=relu"])
    with pytest.raises(ValueError, match="'softmax' or 'sigmoid'"):
        T2IModel(T2IConfig(width=16, layers=1, heads=2, mlp=32, cross_attention="relu"), 32, (4, 4), 8)


def test_background_weights_mark_each_images_most_frequent_token():
    ids = torch.tensor([[7, 7, 7, 2, 3], [1, 4, 4, 4, 4]])
    expected = torch.tensor([[0.25, 0.25, 0.25, 1, 1], [1, 0.25, 0.25, 0.25, 0.25]])
    assert torch.equal(background_weights(ids, 0.25), expected)


def _scenes(*shape_lists):
    return [{"scene": {"objects": [{"shape": s} for s in shapes]}} for shapes in shape_lists]


def test_count_weights_draw_scenes_by_their_number_of_objects():
    meta = _scenes(["heart"], ["heart", "star"], ["star", "ring", "heart"], ["ring", "star"])
    assert sampling_weights(T2IStageConfig(), meta) is None  # the paper's epochs
    weights = sampling_weights(T2IStageConfig(count_weights={2: 2.0}), meta)
    assert np.allclose(weights, np.array([1, 2, 1, 2]) / 6)
    # with class balance, each example's count weight multiplies its class weight
    # (heart 3 times, star 3, ring 2: the mean inverse frequency of its shapes)
    classes = np.array([1 / 3, 1 / 3, (1 / 3 + 1 / 2 + 1 / 3) / 3, (1 / 2 + 1 / 3) / 2])
    both = sampling_weights(T2IStageConfig(balance_classes=True, count_weights={2: 2.0}), meta)
    assert np.allclose(both, classes * [1, 2, 1, 2] / (classes * [1, 2, 1, 2]).sum())


@pytest.mark.parametrize("count_weights, says", [({2: -1.0}, "must not be negative"), ({1: 0.0, 2: 0.0, 3: 0.0}, "weight 0")])
def test_count_weights_that_draw_nothing_are_refused(count_weights, says):
    with pytest.raises(UserError, match=says):
        sampling_weights(T2IStageConfig(count_weights=count_weights), _scenes(["heart"], ["heart", "star"], ["a", "b", "c"]))


def test_count_weights_need_the_worlds_scenes():
    with pytest.raises(UserError, match="count_weights need the scenes"):
        sampling_weights(T2IStageConfig(count_weights={2: 2.0}), [{"style": "alt"}])


def test_a_weighted_loss_is_the_weighted_mean_over_masked_tokens():
    model = tiny_model()
    ids = torch.randint(0, 32, (4, 16))
    text, mask, _, _ = _texts(model, batch=4)
    token_mask = random_mask(4, 16, torch.Generator().manual_seed(5))
    plain, _, _ = masked_prediction_loss(model, ids, text, mask, mask_BN=token_mask)
    ones, _, _ = masked_prediction_loss(model, ids, text, mask, mask_BN=token_mask, weight_BN=torch.ones(4, 16))
    assert torch.allclose(plain, ones, atol=1e-6)
    # all the weight on one masked token: the loss is that token's cross-entropy
    weight = torch.zeros(4, 16)
    b, n = token_mask.nonzero()[0].tolist()
    weight[b, n] = 3.0
    one, _, _ = masked_prediction_loss(model, ids, text, mask, mask_BN=token_mask, weight_BN=weight)
    logits = model(ids.masked_fill(token_mask, model.mask_id), text, mask)
    assert torch.allclose(one, torch.nn.functional.cross_entropy(logits[b, n], ids[b, n]), atol=1e-5)


def _t2i_task(lm_dir, dist=None, parallel="ddp", ema_decay=0.0, optimizer="adamw", average_from=0):
    from synth2.models.lm import FrozenLM
    from synth2.train.distributed import DistInfo
    from synth2.train.loop import TrainConfig
    from synth2.train.t2i import T2IStageConfig, T2ITask

    from conftest import CAPTIONS

    cfg = T2IStageConfig(model=T2IConfig(width=16, layers=1, heads=2, mlp=32, dropout=0.0),
                         train=TrainConfig(steps=6, batch_size=8, lr=1e-2, warmup=1, checkpoint_every=3, log_every=1, parallel=parallel),
                         ema_decay=ema_decay, optimizer=optimizer, average_from=average_from)
    tokens = np.random.default_rng(0).integers(0, 16, (len(CAPTIONS), 4, 4))
    return T2ITask(cfg, FrozenLM.from_pretrained(lm_dir), tokens, CAPTIONS, 16, dist or DistInfo(), 0), cfg


@pytest.mark.parametrize("ema_decay, optimizer, average_from", [(0.0, "adamw", 0), (0.9, "adamw", 0), (0.0, "muon", 0), (0.0, "adamw", 2)])
def test_resume_equals_uninterrupted(tiny_llama_dir, tmp_path, ema_decay, optimizer, average_from):
    """With `ema_decay` or `average_from`, the weights' average resumes as well (it is one of the
    task's modules); with Muon, both optimizers' states."""
    def task():
        return _t2i_task(tiny_llama_dir, ema_decay=ema_decay, optimizer=optimizer, average_from=average_from)

    assert_resume_equals_uninterrupted(lambda: task()[0], task()[1].train, tmp_path, "t2i", stop_after=3)


def test_muon_updates_the_hidden_matrices_and_adamw_the_rest(tiny_llama_dir):
    """Every weight has one optimizer: Muon the linear maps between the embeddings and the head,
    AdamW the embeddings, the head, norms and biases. Muon's first update of a matrix is its
    momentum made orthogonal, so most of its singular values are alike (a few tokens' gradient
    leaves a tail); AdamW's, the gradient's signs, keep the gradient's leading direction."""
    from synth2.train.distributed import DistInfo
    from synth2.train.loop import StepContext

    task, cfg = _t2i_task(tiny_llama_dir, optimizer="muon")
    muon = {id(p) for group in task.optimizers["t2i_muon"].param_groups for p in group["params"]}
    adam = {id(p) for group in task.optimizers["t2i"].param_groups for p in group["params"]}
    assert not muon & adam and muon | adam == {id(p) for p in task.model.parameters()}
    names = {id(p): name for name, p in task.model.named_parameters()}
    assert {names[i] for i in muon} == {"text_proj.1.weight", *(f"blocks.0.{layer}.weight" for layer in (
        "self_attn.q", "self_attn.kv", "self_attn.out", "cross_attn.q", "cross_attn.kv", "cross_attn.out", "mlp.0", "mlp.2"))}

    def spread_of_first_update(task):
        before = task.model.blocks[0].mlp[0].weight.detach().clone()
        task.step(task.batch(0), 0, StepContext(cfg.train, DistInfo()))
        singular = torch.linalg.svdvals(task.model.blocks[0].mlp[0].weight.detach() - before)
        return float(singular.max() / singular.median())

    assert spread_of_first_update(task) < 2 < spread_of_first_update(_t2i_task(tiny_llama_dir)[0])


def test_the_moving_average_takes_each_update_and_is_the_model_saved(tiny_llama_dir):
    """e_0 = w_0, e_t = d_t e_(t-1) + (1 - d_t) w_t over the weights after each step t, with
    d_t = min(decay, (1 + t) / (10 + t)) (`moving_average`'s first updates)."""
    from synth2.train.distributed import DistInfo
    from synth2.train.loop import StepContext

    task, cfg = _t2i_task(tiny_llama_dir, ema_decay=0.3)
    ctx = StepContext(cfg.train, DistInfo())
    expected = None
    for step in range(3):
        task.step(task.batch(step), step, ctx)
        weights = {name: p.detach().clone() for name, p in task.model.named_parameters()}
        decay = min(0.3, (1 + step) / (10 + step))  # 2/11, then 3/12
        expected = weights if expected is None else {name: decay * expected[name] + (1 - decay) * w for name, w in weights.items()}
    saved = task.trained_model()
    assert saved is not task.model
    for name, p in saved.named_parameters():
        assert torch.allclose(p, expected[name], atol=1e-7), name
    assert any(not torch.equal(p, weights[name]) for name, p in saved.named_parameters())  # not the last weights


def test_average_from_is_the_mean_of_the_weights_from_that_step_on(tiny_llama_dir):
    """The saved model is the plain mean of the weights after steps 2, 3 and 4, not the weights
    of steps 0 and 1."""
    from synth2.train.distributed import DistInfo
    from synth2.train.loop import StepContext

    task, cfg = _t2i_task(tiny_llama_dir, average_from=2)
    ctx = StepContext(cfg.train, DistInfo())
    after = []
    for step in range(5):
        task.step(task.batch(step), step, ctx)
        after.append({name: p.detach().clone() for name, p in task.model.named_parameters()})
    saved = dict(task.trained_model().named_parameters())
    for name, p in saved.items():
        assert torch.allclose(p, sum(weights[name] for weights in after[2:]) / 3, atol=1e-7), name
    assert any(not torch.allclose(p, sum(weights[name] for weights in after) / 5, atol=1e-6) for name, p in saved.items())


@pytest.mark.parametrize("setting, says", [({"ema_decay": 0.9, "average_from": 2}, "set one"), ({"average_from": 6}, r"average_from must be in \[0, t2i.train.steps=6\)")])
def test_the_averages_refuse_contradictory_settings(tiny_llama_dir, setting, says):
    with pytest.raises(ValueError, match=says):
        _t2i_task(tiny_llama_dir, **setting)


@pytest.mark.parametrize("setting, says", [({"ema_decay": 0.9}, "ema_decay.*parallel=fsdp"), ({"average_from": 2}, "average_from.*parallel=fsdp"),
                                           ({"optimizer": "muon"}, "muon.*parallel=fsdp")])
def test_the_moving_average_and_muon_refuse_sharded_weights(tiny_llama_dir, setting, says):
    from synth2.train.distributed import DistInfo

    with pytest.raises(ValueError, match=says):
        _t2i_task(tiny_llama_dir, DistInfo(world_size=2), parallel="fsdp", **setting)


def _train_in_ddp(dist, lm_dir, out, optimizer):
    from synth2.train.loop import train

    task, cfg = _t2i_task(lm_dir, dist, optimizer=optimizer)
    train(task, cfg.train, out / "ddp", dist, "t2i")
    torch.save(task.model.state_dict(), out / f"rank{dist.rank}.pt")


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_training_runs_under_two_ddp_processes(tiny_llama_dir, tmp_path, optimizer):
    """The DDP path (wrapped model, global masked-token count) trains, and every rank's optimizers
    take the same averaged gradients to the same weights. Masks and text dropout are drawn per
    rank, so its weights are not compared with a single process's."""
    run_ddp(_train_in_ddp, tiny_llama_dir, tmp_path, optimizer)
    state, other_rank = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    single, _ = _t2i_task(tiny_llama_dir, optimizer=optimizer)
    assert state.keys() == single.model.state_dict().keys()
    assert all(torch.isfinite(v).all() and torch.equal(v, other_rank[k]) for k, v in state.items())
    assert any(not torch.equal(v, single.model.state_dict()[k]) for k, v in state.items())  # it trained


def _train_ddp_and_fsdp(dist, lm_dir, out):
    from synth2.train.loop import train
    from synth2.train.sharded import full_state_dict

    states = {}
    ddp, cfg = _t2i_task(lm_dir, dist)
    train(ddp, cfg.train, out / "ddp", dist, "t2i")
    states["ddp"] = {k: v.detach().clone() for k, v in ddp.model.state_dict().items()}
    fsdp, cfg = _t2i_task(lm_dir, dist, parallel="fsdp")
    train(fsdp, cfg.train, out / "fsdp", dist, "t2i")
    states["fsdp"] = full_state_dict(fsdp.model)
    train(_t2i_task(lm_dir, dist, parallel="fsdp")[0], cfg.train, out / "split", dist, "t2i", stop_after=3)
    resumed = _t2i_task(lm_dir, dist, parallel="fsdp")[0]
    train(resumed, cfg.train, out / "split", dist, "t2i")
    states["resumed"] = full_state_dict(resumed.model)
    if dist.is_main:
        torch.save(states, out / "states.pt")


def test_fsdp_trains_the_generator_as_ddp_does_and_resumes_exactly(tiny_llama_dir, tmp_path):
    """Same ranks, same masks: FSDP's sharded update equals DDP's, and a sharded checkpoint resumes bit for bit."""
    run_ddp(_train_ddp_and_fsdp, tiny_llama_dir, tmp_path)
    states = torch.load(tmp_path / "states.pt")
    for name, value in states["ddp"].items():
        # reduce-scatter and all-reduce sum in different orders; Adam turns that float noise on
        # near-zero gradients into up to ~2e-4 after 6 steps of lr 1e-2 (each step moves ~1e-2)
        assert torch.allclose(value, states["fsdp"][name], atol=1e-3), (name, (value - states["fsdp"][name]).abs().max())
        assert torch.equal(states["fsdp"][name], states["resumed"][name]), name


@pytest.mark.parametrize("tokens_follow_caption", [True, False])
def test_text_information_is_positive_only_when_tokens_depend_on_the_caption(tiny_llama_dir, tokens_follow_caption):
    """Train a tiny generator where each caption fixes its image's tokens (or where tokens are
    independent of captions): only the first should gain from its own caption over a shuffled one."""
    from types import SimpleNamespace

    from synth2.eval.generator import text_use
    from synth2.models.lm import FrozenLM

    lm = FrozenLM.from_pretrained(tiny_llama_dir)
    captions = ["a red circle", "a blue square", "a green star", "a pink heart"] * 16
    g = torch.Generator().manual_seed(0)
    per_caption = torch.randint(0, 8, (4, 16), generator=g)
    shuffled_rows = torch.randint(0, 4, (len(captions),), generator=g)
    rows = torch.arange(len(captions)) % 4 if tokens_follow_caption else shuffled_rows
    tokens = per_caption[rows]
    states, mask = lm.encode_texts(captions)
    torch.manual_seed(0)
    model = T2IModel(T2IConfig(width=32, layers=2, heads=2, mlp=64, dropout=0.0), 8, (4, 4), lm.hidden_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss, _, _ = masked_prediction_loss(model, tokens, states, mask, g)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    scores = text_use(SimpleNamespace(lm=lm, model=model.eval()), tokens.numpy(), captions, seed=0)
    if tokens_follow_caption:
        assert scores["text_information_nats"] > 0.5
        assert scores["masked_token_nll"] < scores["masked_token_nll_shuffled_captions"]
    else:
        assert abs(scores["text_information_nats"]) < 0.3


def test_the_generator_is_prompted_without_the_llm_prompts_opening(tiny_llama_dir):
    """GenPair's captions all open with "This is an image of"; the generator sees the rest."""
    from synth2.models.lm import FrozenLM
    from synth2.synthesis import TokenGenerator

    lm = FrozenLM.from_pretrained(tiny_llama_dir)
    model = tiny_model(codebook=16, text_width=lm.hidden_size)
    with_opening = ["This is an image of a red circle.", "this is an image of a blue square on a grey background."]
    without = ["a red circle.", "a blue square on a grey background."]
    dropping = TokenGenerator(lm, model, SamplerConfig(steps=3))
    assert [dropping.prompt(c) for c in with_opening] == without
    assert dropping.prompt("a red circle.") == "a red circle."
    assert torch.equal(dropping.tokens(with_opening, seed=0), dropping.tokens(without, seed=0))
    keeping = TokenGenerator(lm, model, SamplerConfig(steps=3, drop_prefix=""))
    assert keeping.prompt(with_opening[0]) == with_opening[0]
    assert not torch.equal(keeping.tokens(with_opening, seed=0), keeping.tokens(without, seed=0))


def test_the_generator_can_be_prompted_with_the_first_sentence_only(tiny_llama_dir):
    from synth2.models.lm import FrozenLM
    from synth2.synthesis import TokenGenerator

    lm = FrozenLM.from_pretrained(tiny_llama_dir)
    model = tiny_model(codebook=16, text_width=lm.hidden_size)
    caption = "This is an image of a red circle and a blue star. The circle is round!  The star has five points."
    first = TokenGenerator(lm, model, SamplerConfig(steps=3, first_sentence=True))
    assert first.prompt(caption) == "a red circle and a blue star."
    assert first.prompt("a red circle") == "a red circle"
    assert torch.equal(first.tokens([caption], seed=0), first.tokens(["a red circle and a blue star."], seed=0))
    whole = TokenGenerator(lm, model, SamplerConfig(steps=3))
    assert whole.prompt(caption) == caption[len("This is an image of ") :]


def factored_model(seed=0, **config):
    torch.manual_seed(seed)
    return T2IModel(T2IConfig(width=16, layers=2, heads=2, mlp=32, dropout=0.0, **config), 12, (4, 4), 8, code_factors=(4, 3)).eval()


def test_a_factored_generator_scores_product_codes_as_a_product_of_its_parts():
    model = factored_model()
    text, mask = torch.randn(2, 3, 8), torch.ones(2, 3, dtype=torch.bool)
    ids = torch.randint(0, 12, (2, 16), generator=torch.Generator().manual_seed(1))
    joint = model(ids, text, mask)  # log-probabilities over the 12 ids
    assert joint.shape == (2, 16, 12) and torch.allclose(joint.exp().sum(-1), torch.ones(2, 16), atol=1e-5)
    # id 3 * s + c has log p(c) + log p(s | c): the colour part first, the structure given it
    (structure, colour), _ = model(ids, text, mask, choose=lambda i, logits: torch.full(logits.shape[:-1], 1))
    expected = structure.log_softmax(-1)[..., 2] + colour.log_softmax(-1)[..., 1]
    assert torch.allclose(joint[..., 2 * 3 + 1], expected, atol=1e-5)
    # the loss is the joint negative log-likelihood on the masked positions, computed from the parts
    token_mask = torch.zeros(2, 16, dtype=torch.bool)
    token_mask[:, ::3] = True
    loss, accuracy, _ = masked_prediction_loss(model, ids, text, mask, mask_BN=token_mask)
    inputs = ids.masked_fill(token_mask, model.mask_id)
    reference = torch.nn.functional.nll_loss(model(inputs, text, mask)[token_mask], ids[token_mask])
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    assert 0 <= accuracy.item() <= 1
    # three parts: the joint table is still the parts' chain, part 0 most significant
    from synth2.models.t2i import FactoredHead

    head, x = FactoredHead(8, (3, 2, 4)), torch.randn(2, 5, 8)
    chain = [torch.full((2, 5), k) for k in (1, 0, 3)]
    logits, _ = head.parts(x, lambda i, _: chain[i])
    assert torch.allclose(head(x)[..., 1 * 8 + 0 * 4 + 3], sum(l.log_softmax(-1)[..., k] for l, k in zip(logits, (1, 0, 3))), atol=1e-5)
    # unchained, each part's logits ignore the parts chosen after it, and the joint is their product
    head = FactoredHead(8, (3, 2, 4), chained=False)
    logits, _ = head.parts(x, lambda i, _: chain[i])
    other, _ = head.parts(x, lambda i, logits: torch.zeros(logits.shape[:-1], dtype=torch.long))
    assert all(torch.equal(a, b) for a, b in zip(logits, other))
    joint = head(x).exp().view(2, 5, 3, 2, 4)
    marginals = [l.softmax(-1) for l in logits]
    assert torch.allclose(joint, marginals[0][..., :, None, None] * marginals[1][..., None, :, None] * marginals[2][..., None, None, :], atol=1e-6)


@pytest.mark.parametrize("chained", [False, True])
def test_a_pointer_part_copies_the_codes_of_the_word_it_attends_to(chained):
    model = factored_model(pointer_parts=[1], chain_parts=chained, structure_first=True, text_conv=3)
    text, mask = torch.randn(2, 3, 8), torch.ones(2, 3, dtype=torch.bool)
    ids = torch.randint(0, 12, (2, 16), generator=torch.Generator().manual_seed(1))
    joint = model(ids, text, mask)
    assert torch.allclose(joint.exp().sum(-1), torch.ones(2, 16), atol=1e-5)
    # the colour is chosen last: id 3 * s + c has log p(s) + log p(c | s)
    (structure, colour), _ = model(ids, text, mask, choose=lambda i, logits: torch.full(logits.shape[:-1], 2 if i == 0 else 1))
    assert torch.allclose(joint[..., 2 * 3 + 1], structure.log_softmax(-1)[..., 2] + colour[..., 1], atol=1e-5)
    # greedy one-step decoding (the caption's side computed once, the head on unknown tokens):
    # the most likely structure, then the most likely colour given it
    empty, empty_mask = torch.zeros(1, 8), torch.ones(1, dtype=torch.bool)
    ids_drawn = sample(model, text, mask, empty, empty_mask, SamplerConfig(steps=1, guidance=1.0, temperature=0.0, choice_temperature=0.0))
    blank = model(torch.full((2, 16), model.mask_id), text, mask).view(2, 16, 4, 3)  # [structure, colour]
    drawn_structure = blank.logsumexp(3).argmax(-1)
    drawn_colour = blank.gather(2, drawn_structure[..., None, None].expand(2, 16, 1, 3)).squeeze(2).argmax(-1)
    assert torch.equal(ids_drawn, drawn_structure * 3 + drawn_colour)
    # the loss is still the joint's negative log-likelihood, computed from the parts
    token_mask = torch.zeros(2, 16, dtype=torch.bool)
    token_mask[:, 1::2] = True
    loss, _, _ = masked_prediction_loss(model, ids, text, mask, mask_BN=token_mask)
    reference = F.nll_loss(model(ids.masked_fill(token_mask, model.mask_id), text, mask)[token_mask], ids[token_mask])
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    # a word's key reads its neighbours (the text convolution), its codes do not
    pointer, neighbours = model.pointers[1], text.clone()
    neighbours[:, [0, 2]] = torch.randn(2, 2, 8)
    with torch.no_grad():
        here, there = (pointer.caption(model.text_states(t, mask), t, mask) for t in (text, neighbours))
    assert not torch.allclose(here.keys[:, 1], there.keys[:, 1])
    assert torch.equal(here.probs[:, 1], there.probs[:, 1])
    # the colour is the weights' mixture of the own slot's codes and each word's codes as the
    # position reweighs them, which `forward` computes without making the (positions, words, codes) tensor
    state, own, caption = torch.randn(2, 5, 16), torch.randn(2, 5, 3), here
    with torch.no_grad():
        weights, words = pointer.attention(state, caption).exp(), pointer.word_codes(state, caption).exp()
        mixture = weights[..., 0:1] * own.softmax(-1) + (weights[..., 1:, None] * words).sum(-2)
        assert torch.allclose(pointer(state, own, caption).exp(), mixture, atol=1e-6)
        # selected positions' states get what they get among all positions
        select = torch.rand(2, 5, generator=torch.Generator().manual_seed(2)) < 0.5
        assert torch.allclose(pointer(state[select], own[select], caption.at(select)), pointer(state, own, caption)[select], atol=1e-6)
    # a position that attends to word 1 alone draws the colour part from that word's codes, and
    # with no say of its own (`fit` zero) exactly them
    with torch.no_grad():
        pointer.query.weight.zero_()
        pointer.query.bias.fill_(1.0)
        pointer.own_key.fill_(-100.0)  # the position's own slot scores far below any word
        pointer.fit.weight.zero_()
        pointer.fit.bias.zero_()
    one_word = mask.clone()
    one_word[:, [0, 2]] = False
    (_, colour), _ = model(ids, text, one_word, choose=lambda i, logits: logits.argmax(-1))
    expected = pointer.value(text[:, 1]).log_softmax(-1)[:, None, :].expand(2, 16, 3)
    assert torch.allclose(colour, expected, atol=1e-5)
    # the position's say multiplies the word's distribution: a code the word gives no weight stays out
    with torch.no_grad():
        pointer.fit.bias.copy_(torch.tensor([0.0, 3.0, -3.0]))
    (_, fitted), _ = model(ids, text, one_word, choose=lambda i, logits: logits.argmax(-1))
    assert torch.allclose(fitted, (expected + pointer.fit.bias).log_softmax(-1), atol=1e-5)
    with pytest.raises(ValueError, match="pointer_parts needs product codes"):
        T2IModel(T2IConfig(width=16, layers=1, heads=2, mlp=32, pointer_parts=[0]), 12, (4, 4), 8)
    with pytest.raises(ValueError, match=r"pointer_parts \[2\]: the codes have parts 0 to 1"):
        factored_model(pointer_parts=[2])


def test_a_part_with_fit_rank_zero_takes_a_words_codes_whatever_the_positions_state():
    """`pointer_fit_rank` 0: no `fit`, so a position attending to one word draws exactly that
    word's codes, while the other pointer still reweighs its word's codes by the state."""
    model = factored_model(pointer_parts=[0, 1], pointer_fit_rank={1: 0}, structure_first=True)
    assert model.pointers[1].fit is None and model.pointers[0].fit is not None
    text, mask = torch.randn(2, 3, 8), torch.ones(2, 3, dtype=torch.bool)
    caption = model.pointers[1].caption(model.text_states(text, mask), text, mask)
    for seed in range(2):
        state = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(seed))
        codes = model.pointers[1].word_codes(state, caption).exp()
        assert torch.allclose(codes, caption.probs[:, None].expand_as(codes), atol=1e-6)
    assert not torch.allclose(*(model.pointers[0].word_codes(torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(s)),
                                                             model.pointers[0].caption(model.text_states(text, mask), text, mask)) for s in range(2)))
    joint = model(torch.randint(0, 12, (2, 16)), text, mask)
    assert torch.allclose(joint.exp().sum(-1), torch.ones(2, 16), atol=1e-5)
    with pytest.raises(ValueError, match=r"pointer_fit_rank \{0: 0\} names parts not among pointer_parts \[1\]"):
        factored_model(pointer_parts=[1], pointer_fit_rank={0: 0})


def test_a_rank_limited_fit_moves_a_words_codes_along_that_many_directions():
    model = factored_model(pointer_parts=[0, 1], pointer_fit_rank={0: 1}, structure_first=True)
    pointer = model.pointers[0]
    fits = pointer._fit(torch.randn(6, 16, generator=torch.Generator().manual_seed(0)))
    # positions differ along one direction over the codes (up to the shift that takes off the max)
    centred = fits - fits.mean(-1, keepdim=True)
    assert torch.linalg.matrix_rank(centred[1:] - centred[0], atol=1e-5) == 1


def test_every_part_can_be_copied_from_a_caption_word():
    """Structure and colour each from a pointer of their own: still one distribution over the
    product ids, whose parts the head and the sampler's caption context give alike."""
    model = factored_model(pointer_parts=[0, 1], structure_first=True, text_conv=3)
    assert sorted(model.pointers) == [0, 1] and model.pointers[0] is not model.pointers[1]
    text, mask = torch.randn(2, 3, 8), torch.ones(2, 3, dtype=torch.bool)
    ids = torch.randint(0, 12, (2, 16), generator=torch.Generator().manual_seed(1))
    joint = model(ids, text, mask)
    assert torch.allclose(joint.exp().sum(-1), torch.ones(2, 16), atol=1e-5)
    pick = lambda i, logits: torch.full(logits.shape[:-1], 3 if i == 0 else 2)  # noqa: E731
    (structure, colour), _ = model(ids, text, mask, choose=pick)
    assert torch.allclose(joint[..., 3 * 3 + 2], structure[..., 3] + colour[..., 2], atol=1e-5)  # log-probabilities already
    (structure_ctx, colour_ctx), _ = model(ids, text, mask, choose=pick, context=model.text_context(text, mask))
    assert torch.allclose(structure_ctx, structure, atol=1e-6) and torch.allclose(colour_ctx, colour, atol=1e-6)


def test_a_factored_generator_samples_part_by_part_and_embeds_ids_it_never_saw():
    model = factored_model()
    text, mask = torch.randn(3, 4, 8), torch.ones(3, 4, dtype=torch.bool)
    empty, empty_mask = torch.zeros(1, 8), torch.ones(1, dtype=torch.bool)
    # greedy one-step decoding: the most likely colour, then the most likely structure given it
    one_step = SamplerConfig(steps=1, guidance=1.0, temperature=0.0, choice_temperature=0.0)
    ids = sample(model, text, mask, empty, empty_mask, one_step)
    joint = model(torch.full((3, 16), model.mask_id), text, mask).view(3, 16, 4, 3)  # [structure, colour]
    colour = joint.logsumexp(2).argmax(-1)
    structure = joint.gather(3, colour[..., None, None].expand(3, 16, 4, 1)).squeeze(-1).argmax(-1)
    assert torch.equal(ids, structure * 3 + colour)
    # every id, in any combination of parts, has an embedding built from its parts
    every = torch.arange(12)
    embedded = model.token_embed(every)
    assert torch.allclose(embedded, model.token_embed.parts[0](every // 3) + model.token_embed.parts[1](every % 3))
    assert torch.equal(model.token_embed(torch.tensor([model.mask_id]))[0], model.token_embed.mask)
    with pytest.raises(ValueError, match="multiply"):
        T2IModel(T2IConfig(width=16, layers=1, heads=2, mlp=32), 12, (4, 4), 8, code_factors=(4, 4))


def test_sweep_stage_names_tell_apart_every_sampler_setting():
    import dataclasses

    from synth2.models.sampler import SamplerConfig
    from synth2.stages.generator import sampler_name

    base = SamplerConfig(steps=8, guidance=1.0, temperature=0.0)
    assert sampler_name(base) == "steps8_g1_temp0_choice4.5"
    variants = [base, dataclasses.replace(base, schedule="square"), dataclasses.replace(base, first_sentence=True),
                dataclasses.replace(base, drop_prefix=""), dataclasses.replace(base, drop_prefix="A photo of"), dataclasses.replace(base, steps=16),
                dataclasses.replace(base, precision="bf16")]
    assert len({sampler_name(s) for s in variants}) == len(variants)


def test_a_word_whose_codes_the_position_rules_out_still_gives_finite_gradients():
    """A sharp `fit` that puts its weight where the attended word has none made a word's Z_l so
    small that 1/Z_l^2 overflowed in the backward; the fit's range keeps every gradient finite."""
    torch.manual_seed(0)
    pointer = CaptionPointer(width=4, text_width=4, size=3)
    with torch.no_grad():
        pointer.value[1].weight.zero_()
        pointer.value[1].bias.copy_(torch.tensor([40.0, -40.0, -40.0]))  # the word: code 0
        pointer.fit.weight.zero_()
        pointer.fit.bias.copy_(torch.tensor([-60.0, 0.0, -60.0]))  # the position: code 1
    text, mask = torch.randn(1, 2, 4), torch.ones(1, 2, dtype=torch.bool)
    caption = pointer.caption(torch.randn(1, 2, 4), text, mask)
    state, own = torch.randn(1, 5, 4), torch.randn(1, 5, 3)
    loss = -pointer(state, own, caption)[..., 0].sum()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in pointer.parameters() if p.grad is not None)


def test_the_generator_decodes_under_bf16_autocast_when_the_sampler_says_so(tiny_llama_dir):
    from synth2.models.lm import FrozenLM
    from synth2.synthesis import TokenGenerator

    lm = FrozenLM.from_pretrained(tiny_llama_dir)
    model = tiny_model(codebook=16, text_width=lm.hidden_size)
    captions = ["a red circle.", "a blue square on a grey background.", "two green stars"]
    seen = []
    hook = model.head.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    full = TokenGenerator(lm, model, SamplerConfig(steps=3, guidance=1.0, temperature=0.0)).tokens(captions, seed=0)
    half = TokenGenerator(lm, model, SamplerConfig(steps=3, guidance=1.0, temperature=0.0, precision="bf16")).tokens(captions, seed=0)
    hook.remove()
    assert seen[:3] == [torch.float32] * 3 and seen[3:] == [torch.bfloat16] * 3  # one head call per decoding step
    assert half.shape == full.shape and half.dtype == full.dtype
    assert (half == full).float().mean() > 0.9  # the same drawing, up to bf16 rounding near ties
