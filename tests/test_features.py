"""Feature extraction: the model's mode and hooks are left as found, batches are respected,
every item layout is read, and a ParametricBuffer update runs each sample through the model
once even though it selects several times."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import memstore
from memstore import (
    ClosestToCenterSelectionStrategy,
    HerdingSelectionStrategy,
    MissingSourceError,
    ParametricBuffer,
    extract_features,
)


class Recorder(torch.nn.Module):
    """A small model that records each forward batch (size, mode) and can fail on demand."""

    def __init__(self, d: int = 3, fail_on_batch: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Linear(d, 4), torch.nn.ReLU())
        self.feat = torch.nn.Linear(4, 2)
        self.head = torch.nn.Linear(2, 2)
        self.batches: list[int] = []
        self.modes: list[bool] = []
        self.fail_on_batch = fail_on_batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fail_on_batch is not None and len(self.batches) == self.fail_on_batch:
            raise RuntimeError("boom")
        self.batches.append(int(x.shape[0]))
        self.modes.append(self.training)
        return self.head(self.feat(self.body(x)))

    def expected(self, x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return self.feat(self.body(x)).numpy()


def all_hooks(model: torch.nn.Module) -> list:
    return [h for m in model.modules() for h in m._forward_hooks.values()]


X = torch.randn(10, 3, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("training", [True, False])
def test_extraction_restores_mode_and_removes_hook(training):
    model = Recorder()
    model.train(training)
    feats = extract_features(model, "feat", X, np.arange(10), batch_size=4)
    assert model.training is training
    assert all(m.training is training for m in model.modules())
    assert model.feat._forward_hooks == {} and all_hooks(model) == []
    assert model.modes == [False, False, False]  # eval mode during extraction
    assert model.batches == [4, 4, 2]
    assert feats.dtype == np.float32 and feats.shape == (10, 2)
    np.testing.assert_allclose(feats, model.expected(X), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("training", [True, False])
def test_failure_mid_extraction_restores_mode_and_removes_hook(training):
    model = Recorder(fail_on_batch=1)
    model.train(training)
    with pytest.raises(RuntimeError, match="boom"):
        extract_features(model, "feat", X, np.arange(10), batch_size=3)
    assert model.batches == [3]  # the failure happened mid-way
    assert model.training is training
    assert model.feat._forward_hooks == {} and all_hooks(model) == []


def test_unknown_layer_lists_valid_names():
    model = Recorder()
    for call in (
        lambda: extract_features(model, "fc9", X, np.arange(3)),
        lambda: HerdingSelectionStrategy(model, "fc9"),
        lambda: ClosestToCenterSelectionStrategy(model, "fc9"),
    ):
        with pytest.raises(ValueError, match="'fc9'") as info:
            call()
        for name in ("body", "body.0", "feat", "head"):
            assert f"'{name}'" in str(info.value)
    assert all_hooks(model) == []


class Items(torch.utils.data.Dataset):
    """Items in one of the layouts datasets use: tensor, tuple, list or dict."""

    def __init__(self, x: torch.Tensor, layout: str) -> None:
        self.x, self.layout = x, layout

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        x = self.x[i]
        return {
            "tensor": x,
            "numpy": x.numpy(),
            "tuple": (x, i % 2),
            "list": [x, i % 2, "meta"],
            "dict": {"x": x, "y": i % 2},
            "dict-custom": {"pixels": x, "label": 0},
        }[self.layout]


@pytest.mark.parametrize("layout", ["tensor", "numpy", "tuple", "list", "dict", "dict-custom"])
def test_item_layouts(layout):
    model = Recorder()
    keys = np.array([7, 2, 9, 0, 5])
    input_key = "pixels" if layout == "dict-custom" else None
    feats = extract_features(
        model, "feat", Items(X, layout), keys, batch_size=2, input_key=input_key
    )
    np.testing.assert_allclose(feats, model.expected(X[keys]), rtol=1e-6, atol=1e-6)
    assert model.batches == [2, 2, 1]


def test_dict_item_without_known_key_says_how_to_fix():
    with pytest.raises(KeyError, match="input_key"):
        extract_features(Recorder(), "feat", Items(X, "dict-custom"), np.arange(2))


def test_batched_source_and_flattened_outputs():
    class Conv(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.feat = torch.nn.Conv1d(1, 2, 2)

        def forward(self, x):
            return self.feat(x.unsqueeze(1)).sum()

    src = memstore.ArraySource(X.numpy(), np.zeros(10, dtype=np.int64))
    feats = extract_features(Conv(), "feat", src, np.arange(10), batch_size=3)
    assert feats.shape == (10, 2 * 2)  # [N, 2 channels, 2 positions] flattened per sample


# -- features inside a ParametricBuffer update ---------------------------------------------------
def make_source(n: int = 40, seed: int = 0) -> memstore.ArraySource:
    rng = np.random.default_rng(seed)
    return memstore.ArraySource(
        rng.standard_normal((n, 3)).astype(np.float32), rng.integers(0, 3, size=n)
    )


@pytest.mark.parametrize("groupby", [None, "class", "experience"])
def test_features_computed_once_per_sample_per_update(groupby):
    src = make_source()
    model = Recorder()
    buf = ParametricBuffer(9, groupby, HerdingSelectionStrategy(model, "feat", batch_size=4))
    sources = {"train": src}
    seen = 0
    for k, ids in enumerate((np.arange(0, 15), np.arange(15, 22), np.arange(22, 40))):
        model.batches.clear()
        exp = memstore.Experience(src.targets[ids], ids=ids, source="train", index=k)
        before = len(buf)
        buf.update(exp, sources=sources)
        # Each old exemplar and each new row passes through the model exactly once, although
        # groups are re-selected two or three times in this update.
        assert sum(model.batches) == before + len(ids)
        assert max(model.batches) <= 4
        seen += len(ids)
    model.batches.clear()
    buf.resize(5, sources=sources)
    assert sum(model.batches) == 9
    assert len(buf) == 5 and all_hooks(model) == [] and model.training


def test_old_exemplars_read_through_sources_or_clear_error():
    src = make_source()
    model = Recorder()

    def experience(ids, k, with_data=False):
        data = torch.utils.data.Subset(src, ids.tolist()) if with_data else None
        return memstore.Experience(src.targets[ids], ids=ids, source="train", index=k, data=data)

    buf = ParametricBuffer(6, "class", HerdingSelectionStrategy(model, "feat"))
    first, second = np.arange(0, 20), np.arange(20, 40)
    # New rows can be read from the experience's own data...
    buf.update(experience(first, 0, with_data=True))
    state = buf.state_dict()
    # ...but the old exemplars (ids 0..19) are not in the second experience's data.
    with pytest.raises(MissingSourceError, match="'train'") as info:
        buf.update(experience(second, 1, with_data=True))
    assert "sources=" in str(info.value)
    with pytest.raises(MissingSourceError, match="sources="):
        buf.update(experience(second, 1))
    with pytest.raises(MissingSourceError, match="source 'train'"):
        buf.update(experience(second, 1), sources={"other": src})
    with pytest.raises(MissingSourceError, match="'train'"):
        buf.resize(3)
    memstore_state = buf.state_dict()
    from memstore.testing.reference import assert_state_equal

    assert_state_equal(memstore_state, state)  # every failure left the buffer as it was

    buf.update(experience(second, 1), sources={"train": src})
    # Same result when the experience comes from a Subset of the source (ids = root indices).
    other = ParametricBuffer(6, "class", HerdingSelectionStrategy(model, "feat"))
    for ids, k in ((first, 0), (second, 1)):
        other.update(
            memstore.Experience.from_dataset(
                torch.utils.data.Subset(src, ids.tolist()), source="train", index=k
            )
        )
    assert other.buffer.equals(buf.buffer)
    assert sorted(buf.buffer.ids.tolist()) != sorted(first.tolist()[:6])


def test_feature_model_failure_leaves_buffer_unchanged():
    src = make_source()
    model = Recorder()
    strategy = ClosestToCenterSelectionStrategy(model, "feat", batch_size=4)
    buf = ParametricBuffer(8, "class", strategy)
    buf.update(memstore.Experience(src.targets[:20], ids=np.arange(20)), {"default": src})
    state = buf.state_dict()
    model.fail_on_batch = len(model.batches) + 2  # the third batch of the next update
    with pytest.raises(RuntimeError, match="boom"):
        buf.update(memstore.Experience(src.targets[20:], ids=np.arange(20, 40)), {"default": src})
    from memstore.testing.reference import assert_state_equal

    assert_state_equal(buf.state_dict(), state)
    assert all_hooks(model) == [] and model.training
