"""Mixed precision: fp16 autocast with a dynamic loss scale, resumed exactly like fp32."""

import dataclasses

import pytest
import torch
from resume import assert_resume_equals_uninterrupted
from test_t2i import _t2i_task

from synth2.train.distributed import DistInfo
from synth2.train.loop import TrainConfig, train


def _fp16_task(lm_dir):
    task, cfg = _t2i_task(lm_dir)
    return task, dataclasses.replace(cfg.train, precision="fp16")


def test_fp16_trains_with_a_loss_scale_and_checkpoints_it(tiny_llama_dir, tmp_path):
    task, train_cfg = _fp16_task(tiny_llama_dir)
    result = train(task, train_cfg, tmp_path, DistInfo(), "t2i")
    assert all(torch.isfinite(torch.tensor(v)) for v in result.last_metrics.values())
    saved = torch.load(result.checkpoint / "optim.pt", weights_only=True)
    assert saved["scaler"]["scale"] > 0  # the dynamic loss scale travels with the checkpoint


def test_fp16_resume_equals_uninterrupted(tiny_llama_dir, tmp_path):
    _, train_cfg = _fp16_task(tiny_llama_dir)
    assert_resume_equals_uninterrupted(lambda: _fp16_task(tiny_llama_dir)[0], train_cfg, tmp_path, "t2i", stop_after=3)



def test_compile_true_trains_the_compiled_model_to_the_eager_numbers(tiny_llama_dir, tmp_path):
    from synth2.models.lm import FrozenLM
    from synth2.train.t2i import T2ITask

    eager_task, cfg = _t2i_task(tiny_llama_dir)
    eager = train(eager_task, cfg.train, tmp_path / "eager", DistInfo(), "t2i")
    compiled_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, compile=True))
    compiled_task = T2ITask(compiled_cfg, FrozenLM.from_pretrained(tiny_llama_dir), eager_task.tokens.view(-1, 4, 4).numpy(), eager_task.captions, 16, DistInfo(), 0)
    assert isinstance(compiled_task.ddp, torch._dynamo.eval_frame.OptimizedModule)
    compiled = train(compiled_task, compiled_cfg.train, tmp_path / "compiled", DistInfo(), "t2i")
    assert compiled.last_metrics["loss"] == pytest.approx(eager.last_metrics["loss"], rel=1e-3)


def _grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_checkpointed_generator_blocks_give_the_same_loss_and_gradients():
    from synth2.models.t2i import T2IConfig, T2IModel

    torch.manual_seed(0)
    model = T2IModel(T2IConfig(width=16, layers=2, heads=2, mlp=32, dropout=0.1), 16, (4, 4), 8).train()
    ids, text, mask = torch.randint(0, 17, (3, 16)), torch.randn(3, 5, 8), torch.ones(3, 5, dtype=torch.bool)
    results = []
    for recompute in (False, True):
        model.checkpoint_blocks = recompute
        torch.manual_seed(1)  # the same dropout masks: checkpointing replays the RNG in backward
        loss = model(ids, text, mask).logsumexp(-1).mean()
        results.append((loss.detach(), _grads(model, loss)))
    (plain, plain_grads), (recomputed, recomputed_grads) = results
    assert torch.equal(plain, recomputed)
    assert all(torch.allclose(plain_grads[n], recomputed_grads[n], atol=1e-7) for n in plain_grads)


def test_checkpointed_lm_layers_give_the_vlm_the_same_gradients_and_are_restored(tiny_llama_dir):
    from test_vlm import batch, make_vlm

    from synth2.models.vlm import TrainableParts

    vlm = make_vlm(tiny_llama_dir, gates=0.5).train()
    parts = TrainableParts(vlm)
    ids, mask, labels, tokens = batch(vlm)
    results = []
    for recompute in (False, True):
        with vlm.checkpointed_lm(recompute):
            loss = parts(ids, mask, labels, tokens)
        results.append((loss.detach(), _grads(parts, loss)))
    assert torch.equal(results[0][0], results[1][0])
    assert all(torch.allclose(results[0][1][n], results[1][1][n], atol=1e-6) for n in results[0][1])
    assert all("forward" not in vars(layer) for layer in vlm.lm.decoder_layers)  # the shared LM is as it was


def test_two_accumulated_micro_batches_give_the_update_of_the_whole_batch(tiny_llama_dir, tmp_path):
    """Captions of one length, so a micro-batch's token mean weighs as the whole batch's does."""
    import numpy as np

    from test_vlm import CFG, make_vlm

    from synth2.train.vlm import SourceConfig, SourceData, VLMStageConfig, VLMTask

    caption = "a small red circle above a large blue square"
    tokens = np.random.default_rng(0).integers(0, 16, (16, 4, 4))

    def run(accumulate: int, out: str):
        vlm = make_vlm(tiny_llama_dir, seed=0)
        cfg = VLMStageConfig(model=CFG, train=TrainConfig(steps=4, batch_size=8, lr=1e-2, warmup=1, checkpoint_every=4, accumulate=accumulate))
        task = VLMTask(cfg, vlm, [SourceData("paired", SourceConfig(kind="real", data="paired"), [caption] * 16, tokens)], DistInfo(), 0)
        result = train(task, cfg.train, tmp_path / out, DistInfo(), "vlm")
        return result, task.modules["vlm"].state_dict()

    (whole, whole_state), (accumulated, accumulated_state) = run(1, "whole"), run(2, "accumulated")
    assert accumulated.last_metrics["loss"] == pytest.approx(whole.last_metrics["loss"], rel=1e-5)
    assert accumulated.last_metrics["grad_norm"] == pytest.approx(whole.last_metrics["grad_norm"], rel=1e-4)  # the whole batch's gradient
    for name, value in whole_state.items():
        assert torch.allclose(value, accumulated_state[name], atol=1e-5), name


def test_a_batch_that_does_not_split_into_micro_batches_is_a_clear_error():
    from synth2.train.loop import split_batch

    assert [t.tolist() for t in split_batch(torch.arange(4), 2)] == [[0, 1], [2, 3]]
    pieces = split_batch((torch.zeros(4, 2), torch.ones(4)), 2)
    assert len(pieces) == 2 and isinstance(pieces[0], tuple) and pieces[1][0].shape == (2, 2)
    with pytest.raises(ValueError, match="does not split into 3 micro-batches"):
        split_batch(torch.zeros(4), 3)


def test_a_vlm_trained_in_bf16_on_a_cpu_reads_its_lm_eagerly_and_steps_as_fp32_does(tiny_llama_dir):
    """On a CPU the LM's fused attention is slow in bf16 (models/attention.py), so a VLM training
    in half precision switches its frozen LM to eager attention; the step's loss stays fp32's."""
    import numpy as np

    from test_vlm import CFG, make_vlm

    from synth2.train.loop import StepContext
    from synth2.train.vlm import SourceConfig, SourceData, VLMStageConfig, VLMTask

    tokens = np.random.default_rng(0).integers(0, 16, (8, 4, 4))
    losses = {}
    for precision in ("fp32", "bf16"):
        vlm = make_vlm(tiny_llama_dir, seed=0)
        cfg = VLMStageConfig(model=CFG, train=TrainConfig(steps=1, batch_size=8, precision=precision))
        task = VLMTask(cfg, vlm, [SourceData("paired", SourceConfig(kind="real", data="paired"), ["a small red circle above a blue square"] * 8, tokens)], DistInfo(), 0)
        assert vlm.lm.model.config._attn_implementation == ("eager" if precision == "bf16" else "sdpa")
        losses[precision] = task.step(task.batch(0), 0, StepContext(cfg.train, DistInfo()))["loss"]
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.02)


@pytest.mark.parametrize("precision, attention", [("fp32", "sdpa"), ("bf16", "eager")])
def test_the_lm_stage_trains_in_bf16_on_a_cpu_with_eager_attention(tiny_llama_dir, precision, attention):
    from synth2.models.lm import FrozenLM
    from synth2.train.lm import LMStageConfig, LMTask

    lm = FrozenLM.from_pretrained(tiny_llama_dir)
    LMTask(LMStageConfig(train=TrainConfig(steps=1, batch_size=4, precision=precision)), lm, ["a red circle"] * 8, DistInfo(), 0)
    assert lm.model.config._attn_implementation == attention
