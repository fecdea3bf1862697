from __future__ import annotations

import numpy as np
import pytest
import torch

from braintumor.training.data import UNTYPED, RandomIntensity, resolve_task, sampling_weights, target_of
from braintumor.training.loss import Criterion


def test_untyped_tumor_loss_is_minus_log_one_minus_p_no_tumor() -> None:
    logits = torch.tensor([[1.0, 2.0, 0.5, -1.0]])
    crit = Criterion(False, torch.tensor([UNTYPED]), 4, weighted=False, negative=2)
    p = torch.softmax(logits, 1)[0]
    assert float(crit(logits, torch.tensor([UNTYPED]))) == pytest.approx(float(-torch.log(1 - p[2])), rel=1e-5)
    # any tumor class is right for an untyped tumor; "no tumor" is wrong
    assert crit.correct(logits, torch.tensor([UNTYPED])).tolist() == [True]
    assert crit.correct(torch.tensor([[0.0, 0, 5, 0]]), torch.tensor([UNTYPED])).tolist() == [False]


def test_untyped_loss_trains_tumor_vs_no_tumor_but_not_the_type() -> None:
    logits = torch.zeros(1, 3, requires_grad=True)
    crit = Criterion(False, torch.tensor([UNTYPED]), 3, weighted=False, negative=1)
    crit(logits, torch.tensor([UNTYPED])).backward()
    g = logits.grad[0]
    assert g[1] > 0 and g[0] < 0 and g[2] < 0  # pushes p(no tumor) down, both tumor types up alike
    assert float(g[0]) == pytest.approx(float(g[2]))


def test_class_weights_count_typed_images_only() -> None:
    targets = torch.tensor([0, 0, 0, 1, UNTYPED, UNTYPED])
    crit = Criterion(False, targets, 2, weighted=True, negative=1)
    assert crit.class_weight is not None and crit.class_weight.tolist() == pytest.approx([4 / 6, 2.0])
    with pytest.raises(ValueError, match="no tumor"):
        Criterion(False, targets, 2, weighted=True, negative=None)


def test_weighted_validation_loss_is_a_weighted_mean() -> None:
    crit = Criterion(True, torch.tensor([0, 1]), 2, weighted=False)
    logits = torch.tensor([[0.0], [3.0]])
    per = crit.per_sample(logits, torch.tensor([0, 1]))
    w = torch.tensor([3.0, 1.0])
    assert float(crit(logits, torch.tensor([0, 1]), w, evaluate=True)) == pytest.approx(float((per * w).sum() / 4))


def test_untyped_label_is_not_a_class_when_types_and_a_negative_exist() -> None:
    labels = ["glioma", "notumor", "tumor", "pituitary"]
    task, classes = resolve_task(labels, "multiclass", "tumor")
    assert classes == ("glioma", "notumor", "pituitary")
    assert target_of("tumor", task, classes) == UNTYPED and target_of("glioma", task, classes) == 0
    # without a negative class "tumor" stays an ordinary class
    assert resolve_task(["tumor", "glioma"], "multiclass", "tumor")[1] == ("glioma", "tumor")
    assert resolve_task(["yes", "no"], "auto", "tumor") == ("binary", ("no_tumor", "tumor"))


def test_balanced_sampling_gives_each_cell_the_same_share() -> None:
    ds = ["a"] * 90 + ["a"] * 10 + ["b"] * 5 + ["b"] * 20
    t = [0] * 90 + [1] * 10 + [0] * 5 + [1] * 20
    w = sampling_weights(ds, t, 1.0)
    cells = np.array([f"{d}{x}" for d, x in zip(ds, t, strict=True)])
    assert all(w[cells == c].sum() == pytest.approx(0.25) for c in set(cells.tolist()))
    natural = sampling_weights(ds, t, 0.0)
    assert natural == pytest.approx(np.full(125, 1 / 125))


def test_intensity_augmentation_keeps_padding_black_and_changes_the_foreground() -> None:
    torch.manual_seed(0)
    img = torch.zeros(3, 32, 32, dtype=torch.uint8)
    img[:, 8:24, 8:24] = torch.randint(20, 200, (16, 16), dtype=torch.uint8)
    aug = RandomIntensity(0.3, 0.3, 0.5)
    outs = [aug(img) for _ in range(5)]
    assert all(o.dtype == torch.uint8 and int(o[:, :8].max()) == 0 for o in outs)
    assert any(not torch.equal(o, img) for o in outs)


def test_sources_of_an_image_are_the_datasets_its_duplicate_group_spans() -> None:
    from braintumor.data.splits import SplitRow
    from braintumor.training.loop import _sources_by_key

    rows = [
        SplitRow("a/no/1.jpg", "a", "no/1.jpg", "no", 0, "train", None),
        SplitRow("b/notumor/1.jpg", "b", "notumor/1.jpg", "notumor", 0, "train", None),  # b re-published a's slice
        SplitRow("b/notumor/2.jpg", "b", "notumor/2.jpg", "notumor", 1, "train", None),  # b's own
    ]
    assert _sources_by_key(rows) == {"a/no/1.jpg": "a+b", "b/notumor/1.jpg": "a+b", "b/notumor/2.jpg": "b"}


def test_balance_by_is_validated() -> None:
    from braintumor.training.config import ConfigError, TrainConfig

    assert TrainConfig(balance_by="sources").validated().balance_by == "sources"
    with pytest.raises(ConfigError, match="balance_by"):
        TrainConfig(balance_by="folder").validated()
