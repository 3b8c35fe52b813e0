"""The training dropout's cheaper mask: the rate and scale of ``F.dropout``, a no-op outside training."""

import pytest
import torch
from torch import nn

from linkner.model.dropout import MaskDropout, mask_dropout, use_mask_dropout


@pytest.mark.parametrize("rate", [0.1, 0.2, 0.5])
def test_the_mask_drops_at_the_rate_and_keeps_the_mean(rate):
    torch.manual_seed(0)
    values = torch.ones(600_001)
    dropped = mask_dropout(values, rate)
    assert (dropped == 0).float().mean().item() == pytest.approx(rate, abs=0.003)
    assert dropped.unique().tolist() == [0.0, pytest.approx(1 / (1 - rate))]
    assert dropped.mean().item() == pytest.approx(1.0, abs=0.01)


def test_elements_are_dropped_independently_of_their_neighbours():
    torch.manual_seed(1)
    kept = mask_dropout(torch.ones(300_000), 0.5) > 0
    pairs = kept[:-1] & kept[1:]  # neighbours (also within one random draw) both kept: 1/4 when independent
    assert pairs.float().mean().item() == pytest.approx(0.25, abs=0.005)


def test_outside_training_and_at_rate_zero_values_pass_unchanged():
    values = torch.randn(4, 7)
    assert torch.equal(mask_dropout(values, 0.3, training=False), values)
    assert torch.equal(mask_dropout(values, 0.0), values)
    assert torch.equal(MaskDropout(0.3).eval()(values), values)


def test_gradients_flow_through_the_kept_elements_only():
    values = torch.randn(1000, requires_grad=True)
    mask_dropout(values, 0.2).sum().backward()
    kept = values.grad != 0
    assert torch.allclose(values.grad[kept], torch.full_like(values.grad[kept], 1 / 0.8))


def test_every_plain_dropout_is_replaced_and_the_state_dict_is_unchanged():
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.1), nn.Sequential(nn.Dropout(0.4), nn.ReLU()))
    keys = set(model.state_dict())
    assert use_mask_dropout(model) == 2
    assert [type(m) for m in model.modules() if isinstance(m, nn.Dropout)] == [MaskDropout, MaskDropout]
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.1, 0.4]
    assert set(model.state_dict()) == keys
