"""Every model a training task builds or is given goes to the loop's device, and so does every
batch: checked with the loop's device set to `meta` (tensors with shapes and no data), where a
tensor left on the CPU is caught by the assertions, or fails the step outright with a device
mismatch, as it would on a GPU."""

import numpy as np
import pytest
import torch

from synth2.models.lm import FrozenLM
from synth2.models.t2i import T2IConfig
from synth2.models.vlm import VLM, VLMConfig
from synth2.models.vq import VQConfig, VQModel
from synth2.train.clip import ClipStageConfig, ClipTask
from synth2.train.distributed import DistInfo, resolve_device
from synth2.train.lm import LMStageConfig, LMTask
from synth2.train.loop import StepContext, TrainConfig
from synth2.train.t2i import T2IStageConfig, T2ITask
from synth2.train.vlm import SourceConfig, SourceData, VLMStageConfig, VLMTask
from synth2.train.vq import VQStageConfig, VQTask

from conftest import CAPTIONS

META = DistInfo(device=torch.device("meta"))
TRAIN = TrainConfig(steps=2, batch_size=4, lr=1e-3, warmup=1)
VQ = VQConfig(channels=8, channel_mult=[1], patch_size=4, num_res_blocks=1, mid_blocks=0, norm="none", latent_dim=8, codebook_size=16, codebook_dim=4, kmeans_init=False)


def _images(n=8):
    return np.random.default_rng(0).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)


def _tasks(lm_dir):
    yield "vq", VQTask(VQStageConfig(model=VQ, train=TRAIN, channels_last=False), _images(), META, 0), []
    lm = FrozenLM.from_pretrained(lm_dir)
    yield "lm", LMTask(LMStageConfig(train=TRAIN), lm, CAPTIONS, META, 0), [lm]
    lm = FrozenLM.from_pretrained(lm_dir)
    tokens = np.random.default_rng(0).integers(0, 16, (len(CAPTIONS), 4, 4))
    t2i = T2IStageConfig(model=T2IConfig(width=16, layers=1, heads=2, mlp=32, dropout=0.0), train=TRAIN)
    yield "t2i", T2ITask(t2i, lm, tokens, CAPTIONS, 16, META, 0), [lm]
    lm = FrozenLM.from_pretrained(lm_dir)
    yield "clip", ClipTask(ClipStageConfig(train=TRAIN), lm, _images(len(CAPTIONS)), CAPTIONS, META, 0), [lm]
    lm, vq = FrozenLM.from_pretrained(lm_dir), VQModel(VQ).eval()
    vlm = VLM(VLMConfig(width=16, perceiver_layers=1, latents=4, heads=2, xattn_heads=2), lm, vq, (4, 4))
    source = SourceData("paired", SourceConfig(kind="real", data="paired"), CAPTIONS, tokens)
    yield "vlm", VLMTask(VLMStageConfig(model=vlm.cfg, train=TRAIN), vlm, [source], META, 0), [lm, vq]


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)


def test_every_model_and_batch_of_every_task_is_on_the_loops_device(tiny_gpt2_dir, monkeypatch):
    # metrics read numbers off the device; meta tensors have none
    # transformers reads values too: on meta, the LM's states are shapes on the LM's device
    text_states = FrozenLM.text_states
    monkeypatch.setattr(FrozenLM, "text_states", lambda self, ids, mask, layer=-1: (
        torch.zeros(*ids.shape, self.hidden_size, device="meta") if self.model.device.type == "meta" else text_states(self, ids, mask, layer)))
    item, to_float = torch.Tensor.item, torch.Tensor.__float__
    monkeypatch.setattr(torch.Tensor, "item", lambda self: 0.0 if self.is_meta else item(self))
    monkeypatch.setattr(torch.Tensor, "__float__", lambda self: 0.0 if self.is_meta else to_float(self))
    names = []
    for name, task, frozen in _tasks(tiny_gpt2_dir):
        names.append(name)
        models = list(task.modules.values()) + frozen
        for model in models:
            placed = {t.device.type for t in [*model.parameters(), *model.buffers()]}
            assert placed == {"meta"}, (name, type(model).__name__, placed)
        batch = task.batch(0)
        assert {t.device.type for t in _tensors(batch)} == {"meta"}, name
        # vector-quantize-pytorch and transformers read tensor values (meta tensors have none) and
        # the generator's masks need a random generator on the device, which meta has not: the
        # VQ, the LM, the VLM (which runs the LM) and the generator get the placement check alone
        if name == "clip":
            task.step(batch, 0, StepContext(TRAIN, META))  # forward, backward and update run on the device
            assert all(p.grad is None for m in task.modules.values() for p in m.parameters())  # the update zeroed them
    assert names == ["vq", "lm", "t2i", "clip", "vlm"]


@pytest.mark.parametrize("asked, expected", [("cpu", "cpu"), ("meta", "meta"), ("cuda:1", "cuda:1")])
def test_device_names_resolve_as_torch_reads_them(asked, expected):
    assert str(resolve_device(asked)) == expected
    assert resolve_device("cuda", local_rank=3) == torch.device("cuda", 3)  # `cuda`: this process's GPU
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
