"""The resume check every trainer shares: N steps in one go equal N/2 steps, a stop, and a resume."""

import torch

from synth2.train.distributed import DistInfo
from synth2.train.loop import train


def assert_resume_equals_uninterrupted(make_task, train_cfg, tmp_path, name: str, stop_after: int) -> None:
    """`make_task()` builds a fresh task; compares last metrics and every module's weights bitwise."""
    whole_task = make_task()
    whole = train(whole_task, train_cfg, tmp_path / "whole", DistInfo(), name)
    train(make_task(), train_cfg, tmp_path / "split", DistInfo(), name, stop_after=stop_after)
    resumed_task = make_task()
    torch.manual_seed(999)  # a fresh process would not share the RNG state: the checkpoint restores it
    resumed = train(resumed_task, train_cfg, tmp_path / "split", DistInfo(), name)
    assert resumed.last_metrics == whole.last_metrics
    for module, model in whole_task.modules.items():
        for (key, a), b in zip(model.state_dict().items(), resumed_task.modules[module].state_dict().values()):
            assert torch.equal(a, b), f"{module}.{key}"
