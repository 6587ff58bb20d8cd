"""Torch models in the forms users bring them: in-place operations after a read layer, a module used
twice, tuple and dict outputs, train mode, float64 weights. Each case once gave a wrong value
without a word, or an error that pointed the wrong way."""
from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

import mango
from mango.errors import ConfigError
from targets.torch_unit import ObjectiveTarget, UnitTarget
from targets.units import list_layers


def _inplace_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))


def test_inplace_op_after_a_read_layer_does_not_change_its_value():
    net, x = _inplace_net(), torch.randn(6, 1, 8, 8)
    with torch.no_grad():
        conv = net[0](x)
        want = conv[:, 5].mean((1, 2)) + torch.relu(conv[:, 5]).mean((1, 2))
        got = ObjectiveTarget(net, "0:5 + 1:5")(x)
        # a position is a view of the layer's tensor: it must be copied before the ReLU runs in place
        pos = ObjectiveTarget(net, "-1*0:5@(2,3) + 1e-9*output:0")(x)
        one = UnitTarget(net, layer="0", unit=5, position=(2, 3), stop_early=False)(x)
    assert torch.allclose(got, want, atol=1e-6)
    assert (conv[:, 5, 2, 3] < 0).any()             # the case the ReLU would have clamped to 0
    assert torch.allclose(pos, -conv[:, 5, 2, 3] + 1e-9 * net(x)[:, 0], atol=1e-6)
    assert torch.allclose(one, conv[:, 5, 2, 3], atol=1e-6)


class _Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.act = nn.Conv2d(1, 4, 3), nn.Conv2d(4, 6, 3), nn.ReLU()

    def forward(self, x):
        return self.act(self.c2(self.act(self.c1(x)))).mean((2, 3))


def test_a_module_used_twice_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"'act' runs 2 times in one forward pass.*separate nn.ReLU"):
        ObjectiveTarget(_Shared(), "act:3", input_shape=(1, 8, 8))
    assert ObjectiveTarget(_Shared(), "c2:3", input_shape=(1, 8, 8)) is not None     # a layer used once is fine


class _TwoOut(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind, self.f, self.head = kind, nn.Sequential(nn.Flatten(), nn.Linear(64, 4)), nn.Linear(4, 10)

    def forward(self, x):
        f = self.f(x)
        return (f, self.head(f)) if self.kind == "tuple" else {"features": f, "logits": self.head(f)}


@pytest.mark.parametrize("kind, says", [("tuple", r"returns a tuple of 2 items .*\(4,\), \(10,\)"),
                                        ("dict", r"returns a dict with keys \['features', 'logits'\]")])
def test_output_that_is_not_one_tensor_is_refused_with_the_way_out(kind, says):
    for expr in ("output:3", "softmax:3"):
        with pytest.raises(ConfigError, match=says + r".*return self.m\(x\)\[1\]"):
            ObjectiveTarget(_TwoOut(kind), expr, input_shape=(1, 8, 8))
    # a layer inside the model is still read as before
    assert ObjectiveTarget(_TwoOut(kind), "head:3", input_shape=(1, 8, 8)) is not None


def test_train_mode_is_given_back_and_the_search_reads_eval_mode():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    net.train()
    net[2].eval()                                   # a mixed state, as a training loop may leave it
    before = net[1].running_mean.clone()
    res = mango.maximize(net, "output:1", generator="vqvae-digits", optimizer="random", budget=20, seed=0,
                         transform=lambda x: x[..., 4:12, 4:12])
    assert [m.training for m in net] == [True, True, False, True, True]
    assert torch.equal(net[1].running_mean, before)                 # no BatchNorm statistics were updated
    list_layers(net, (1, 8, 8))
    assert torch.equal(net[1].running_mean, before) and net.training
    with torch.no_grad():
        net.eval()
        want = float(net(res.best_image[None, :, 4:12, 4:12])[0, 1])
        net.train()
    assert res.best_value == pytest.approx(want, abs=1e-5)          # the eval-mode value, dropout off
    assert float(res.activation(res.best_image)[0]) == pytest.approx(want, abs=1e-5)


def test_a_float64_model_takes_the_float32_images():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).double()
    x = torch.rand(3, 1, 8, 8)
    got = UnitTarget(net, unit=2)(x)
    with torch.no_grad():
        assert torch.allclose(got, net(x.double())[:, 2].float(), atol=1e-6)
    assert got.dtype == torch.float32
    assert ObjectiveTarget(net, "0:1", input_shape=(1, 8, 8))(x).shape == (3,)


def test_unused_layer_and_token_layers_are_named(caplog):
    class Tok(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj, self.unused = nn.Linear(8, 16), nn.Linear(2, 2)

        def forward(self, x):
            return self.proj(x.flatten(2)[..., :8]).mean(1)     # [B, C, 8] -> tokens [B, C, 16] -> [B, 16]

    with pytest.raises(ConfigError, match=r"'unused' was not called in a forward pass"):
        ObjectiveTarget(Tok(), "unused:0", input_shape=(3, 4, 4))
    with caplog.at_level(logging.WARNING, logger="targets.torch_unit"):
        ObjectiveTarget(Tok(), "proj:1", input_shape=(3, 4, 4))
    assert "features on the last axis" in caplog.text and "size 3 here" in caplog.text


def test_a_submodule_called_logits_is_named_when_output_is_read(caplog):
    class Named(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.f, self.logits = nn.Flatten(), nn.Linear(64, 10)

        def forward(self, x):
            return torch.log_softmax(self.logits(self.f(x)), 1)

    with caplog.at_level(logging.WARNING, logger="targets.torch_unit"):
        ObjectiveTarget(Named(), "logits:3", input_shape=(1, 8, 8))
    assert "submodule named 'logits'" in caplog.text and "reads the model's output" in caplog.text


def test_a_layer_name_with_a_dash_or_a_space_is_written_in_backquotes():
    from mango import objectives as ob

    class Keys(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.ModuleDict({"conv-a": nn.Conv2d(1, 4, 3), "block 1": nn.Conv2d(4, 6, 3)})

        def forward(self, x):
            return self.features["block 1"](self.features["conv-a"](x)).mean((2, 3))

    e = ob.parse("`features.conv-a`:2 - 0.5*`features.block 1`:3@(1,2)")
    assert [t.layer for _, t in e] == ["features.conv-a", "features.block 1"]
    assert ob.parse(str(e)) == e and str(ob.unit("features.conv-a", 2)) == "`features.conv-a`:2"
    net, x = Keys(), torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        want = net.features["conv-a"](x)[:, 2].mean((1, 2)) - 0.5 * net.features["block 1"](net.features["conv-a"](x))[:, 3, 1, 2]
        assert torch.allclose(ObjectiveTarget(net, e)(x), want, atol=1e-6)
    with pytest.raises(ConfigError, match="goes in backquotes"):
        ob.parse("features.conv-a:2")
    # a submodule named like a word of the grammar is written back in backquotes too
    for word in ("softmax", "mem"):
        e = ob.parse(f"`{word}`:3")
        assert e.terms[0][1].kind == "value" and ob.parse(str(e)) == e


def test_a_train_override_is_undone_the_way_it_was_done():
    """A module whose train() does more than set the flag (adapter weights merged in eval, unmerged in
    train): MANGO's eval mode for a call must end with the user's train(True), not a bare flag."""
    class Merging(nn.Linear):
        merged = False

        def train(self, mode: bool = True):
            super().train(mode)
            self.merged = not mode
            return self

    net = nn.Sequential(nn.Flatten(), Merging(64, 3))
    net.train()
    UnitTarget(net, unit=1)(torch.rand(2, 1, 8, 8))
    assert net.training and net[1].training and net[1].merged is False


def test_a_batch_mixing_model_is_warned_about_once(caplog):
    torch.manual_seed(4)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, track_running_stats=False), nn.Flatten(),
                        nn.Linear(4 * 6 * 6, 3))
    target = ObjectiveTarget(net, "output:1")
    with caplog.at_level(logging.WARNING, logger="targets.units"):
        target(torch.rand(8, 1, 8, 8))
        target(torch.rand(8, 1, 8, 8))
    assert caplog.text.count("gives the same image different values") == 1 and "BatchNorm" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="targets.units"):
        ObjectiveTarget(_inplace_net(), "output:1")(torch.rand(8, 1, 8, 8))     # per-image model: quiet
    assert "different values" not in caplog.text


def test_layers_leave_out_a_module_run_twice_and_take_a_float64_model():
    names = [n for n, _ in ObjectiveTarget(_Shared(), "c2:0", input_shape=(1, 8, 8)).layers()]
    assert "act" not in names and {"c1", "c2"} <= set(names)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).double()
    assert dict(UnitTarget(net, unit=2, input_shape=(1, 8, 8)).layers())["2"] == (3,)
