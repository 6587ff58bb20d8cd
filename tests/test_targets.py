"""Targets: hook-based torch units, spiking read-outs, embedded models, paper SNN loading."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import snntorch as snn
import torch
from torch import nn

from mango import registry
from mango.errors import ConfigError
from mango.targets.spiking import SpikingSequential, SpikingTarget, poisson_spikes
from mango.targets.torch_unit import UnitTarget, list_layers


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict([
        ("features", nn.Sequential(OrderedDict([
            ("conv", nn.Conv2d(1, 4, 3, padding=1)), ("relu", nn.ReLU()), ("pool", nn.MaxPool2d(2))]))),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(4 * 4 * 4, 5)),
    ]))


def all_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_unit_target_matches_manual_forward():
    m = small_cnn()
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        conv = m.features.conv(x)
        logits = m(x)
    y = UnitTarget(m, "features.conv", unit=2)(x)
    assert torch.allclose(y, conv[:, 2].mean(dim=(1, 2)))
    y = UnitTarget(m, "features.conv", unit=1, position=(3, 5))(x)
    assert torch.equal(y, conv[:, 1, 3, 5])
    y = UnitTarget(m, "features.conv", unit=(1, 3, 5))(x)       # the same unit, tuple form
    assert torch.equal(y, conv[:, 1, 3, 5])
    assert torch.allclose(UnitTarget(m, unit=4)(x), logits[:, 4])
    assert torch.allclose(UnitTarget(m, "fc", unit=4, output="softmax")(x), torch.softmax(logits, 1)[:, 4])
    assert torch.allclose(UnitTarget(m, "features.conv", unit=2, stop_early=False)(x), conv[:, 2].mean(dim=(1, 2)))
    assert all_hooks(m) == 0


def test_hooks_removed_even_on_error_and_values_differentiable():
    m = small_cnn()
    t = UnitTarget(m, "features.relu", unit=0, input_shape=(1, 8, 8))
    with pytest.raises(Exception):
        t(torch.rand(2, 3, 8, 8))          # wrong channel count fails inside the forward
    assert all_hooks(m) == 0
    x = torch.rand(2, 1, 8, 8, requires_grad=True)
    t(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all_hooks(m) == 0


def test_list_layers():
    layers = dict(list_layers(small_cnn(), (1, 8, 8)))
    assert layers["features.conv"] == (4, 8, 8)
    assert layers["features.pool"] == (4, 4, 4)
    assert layers["fc"] == (5,)
    assert layers["output"] == (5,)
    assert list(layers)[0] == "features.conv"
    assert dict(UnitTarget(small_cnn(), input_shape=(1, 8, 8)).layers())["fc"] == (5,)
    st = SpikingTarget(tiny_snn(), input_shape=(2,))
    assert st.layers() == [("lin", (2,)), ("lif", (2,)), ("output", (2,))]
    assert st.net.lif.mem.numel() == 0                              # states left reset


def test_bad_layer_and_unit_errors():
    m = small_cnn()
    with pytest.raises(ConfigError) as e:
        UnitTarget(m, "features.conx")
    msg = str(e.value)
    assert "features.conx" in msg and msg.index("features.conv") < msg.index("flatten")
    with pytest.raises(ConfigError, match="valid units: 0..3"):
        UnitTarget(m, "features.conv", unit=4, input_shape=(1, 8, 8))
    with pytest.raises(ConfigError, match="out of range"):
        UnitTarget(m, "features.conv", unit=0, position=(8, 0), input_shape=(1, 8, 8))
    with pytest.raises(ConfigError, match="coordinate"):
        UnitTarget(m, "fc", unit=0, position=(1,), input_shape=(1, 8, 8))
    with pytest.raises(ConfigError, match="valid units"):           # checked lazily on the first call
        UnitTarget(m, "fc", unit=9)(torch.rand(1, 1, 8, 8))
    with pytest.raises(ConfigError, match="softmax"):
        UnitTarget(m, output="probs")


def test_unknown_layer_error_lists_output():
    with pytest.raises(ConfigError) as e:
        UnitTarget(small_cnn(), "outptu")
    msg = str(e.value)
    assert "'outptu'" in msg and "output" in msg.split("valid choices:")[1]
    assert UnitTarget(small_cnn(), "output", unit=1).layer == "output"     # and it is accepted


class _Scriptable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")      # torch.jit.script / load are deprecated
def test_torchscript_file_gives_clear_error(tmp_path, capsys):
    from mango.cli import main
    from mango.targets.torch_unit import torch_unit
    path = tmp_path / "scripted.pt"
    torch.jit.script(_Scriptable()).save(str(path))
    with pytest.raises(ConfigError) as e:
        torch_unit(str(path), layer="conv", unit=0, input_shape=(1, 8, 8))
    msg = str(e.value)
    assert "scripted.pt" in msg and "TorchScript" in msg and "state_dict" in msg
    with pytest.raises(ConfigError, match="TorchScript"):
        torch_unit(str(path), layer="conv", unit=0)                # also without an input shape
    code = main(["layers", "torch-unit", "--target-param", f"model={path}",
                 "--target-param", "input_shape=[1, 8, 8]"])
    err = capsys.readouterr().err
    assert code == 2 and "scripted.pt" in err and "TorchScript" in err and "Traceback" not in err
    # a full pickled eager module loads only with the explicit opt-in
    eager = tmp_path / "eager.pt"
    torch.save(_Scriptable(), str(eager))
    with pytest.raises(ConfigError, match="trust_pickle"):
        torch_unit(str(eager), layer="conv", unit=1, input_shape=(1, 8, 8))
    t = torch_unit(str(eager), layer="conv", unit=1, input_shape=(1, 8, 8), trust_pickle=True)
    assert t(torch.rand(2, 1, 8, 8)).shape == (2,)
    # an eager model with a scripted part: its eager layers work, the scripted ones say why not
    mixed = nn.Sequential(OrderedDict([("pre", nn.Conv2d(1, 1, 1)), ("body", torch.jit.script(_Scriptable()))]))
    assert UnitTarget(mixed, "pre", unit=0, input_shape=(1, 8, 8))(torch.rand(2, 1, 8, 8)).shape == (2,)
    assert UnitTarget(mixed, unit=2, input_shape=(1, 8, 8))(torch.rand(2, 1, 8, 8)).shape == (2,)
    with pytest.raises(ConfigError, match="'body.conv' is a TorchScript module"):
        UnitTarget(mixed, "body.conv")
    with pytest.raises(ConfigError, match="TorchScript"):
        UnitTarget(torch.jit.script(_Scriptable()))


# -- spiking -----------------------------------------------------------------

def tiny_snn(beta: float = 0.5) -> SpikingSequential:
    lin = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    return SpikingSequential(OrderedDict([("lin", lin), ("lif", snn.Leaky(beta=beta))]))


def hand_spikes(current: float, beta: float, T: int) -> tuple[list[int], list[float]]:
    """Leaky by hand: mem_t = beta*mem + I - [mem_{t-1} > 1]; spike when mem_t > 1."""
    mem, spikes, mems = 0.0, [], []
    for _ in range(T):
        reset = 1.0 if mem > 1.0 else 0.0
        mem = beta * mem + current - reset
        spikes.append(int(mem > 1.0))
        mems.append(mem)
    return spikes, mems


@pytest.mark.parametrize("fast", [False, True])
def test_spiking_rate_equals_hand_computation(fast):
    net = tiny_snn()
    x = torch.tensor([[0.75, 0.3], [0.3, 0.75]])
    t = SpikingTarget(net, layer="lif", unit=0, T=8, readout="rate", fast=fast, backend="torch")
    assert t.uses_fast_path == fast
    spikes, mems = hand_spikes(0.75, 0.5, 8)
    assert spikes == [0, 1, 0, 0, 1, 0, 0, 1]                # exact binary fractions
    assert torch.equal(t(x), torch.tensor([3 / 8, 0.0]))
    assert torch.equal(t(x), torch.tensor([3 / 8, 0.0]))      # states reset for each stimulus
    c = SpikingTarget(net, layer="lif", unit=0, T=8, readout="count", fast=fast)(x)
    assert torch.equal(c, torch.tensor([3.0, 0.0]))
    # the default graded readout by hand: count + tie from the peak membrane over steps 4..7 (t >= T // 2),
    # the mean membrane and the first spike (step 1)
    _, mems_low = hand_spikes(0.3, 0.5, 8)

    def squash(peak):
        r = peak - 1.0
        return 0.5 + 0.5 * r / (1 + abs(r))
    gr = SpikingTarget(net, layer="lif", unit=0, T=8, fast=fast)(x)
    expect = torch.tensor([(3 + 0.4 * squash(max(mems[4:])) + 0.2 * squash(sum(mems) / 8) + 0.4 * (8 - 1) / 8) / 8,
                           (0 + 0.4 * squash(max(mems_low[4:])) + 0.2 * squash(sum(mems_low) / 8)) / 8],
                          dtype=torch.float64)
    assert torch.allclose(gr, expect, atol=1e-7, rtol=0) and gr[1] > 0
    with pytest.warns(DeprecationWarning, match="tie_break"):
        tbt = SpikingTarget(net, layer="lif", unit=0, T=8, tie_break=0.01, fast=fast)
    tb = tbt(x)
    _, mems_low = hand_spikes(0.3, 0.5, 8)
    expect = torch.tensor([3 / 8 + 0.01 * sum(mems) / 8, 0.01 * sum(mems_low) / 8], dtype=torch.float64)
    assert tbt.readout == "rate" and torch.allclose(tb, expect, atol=1e-6)
    assert tb[1] > 0                                          # the tie-break separates equal rates
    assert all_hooks(net) == 0


def test_spiking_channel_mean_and_poisson():
    net = tiny_snn()
    x = torch.tensor([[0.75, 0.75]])
    assert SpikingTarget(net, layer="lif", unit=1, T=8, readout="rate")(x).item() == 3 / 8
    img = torch.rand(4, 2)
    tp = SpikingTarget(net, layer="lif", unit=0, T=16, encoding="poisson", seed=3)
    assert not tp.noisy and torch.equal(tp(img), tp(img))
    ref = SpikingTarget(net, layer="lif", unit=0, T=16, encoding="poisson", seed=3, fast=False)
    assert torch.equal(tp(img), ref(img))
    assert SpikingTarget(net, encoding="poisson", seed=None).noisy
    assert not tp.differentiable and SpikingTarget(net).differentiable
    s = poisson_spikes(torch.full((2, 3), 0.25), 4000, seed=1)
    assert s.shape == (4000, 2, 3) and abs(s.mean().item() - 0.25) < 0.02


@pytest.mark.parametrize("fast", [False, True])
def test_seeded_poisson_value_independent_of_batch(fast):
    """With a seed, an image's value depends only on (seed, image): not on its batch or position."""
    lin = nn.Linear(6, 2, bias=False)
    with torch.no_grad():
        lin.weight.fill_(0.25)                          # exact sums of spikes: no rounding in batching
    net = SpikingSequential(OrderedDict([("lin", lin), ("lif", snn.Leaky(beta=0.75))]))
    t = SpikingTarget(net, layer="lif", unit=0, T=32, readout="count", encoding="poisson", seed=5, fast=fast)
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(5, 6, generator=g)
    alone = torch.cat([t(imgs[i:i + 1]) for i in range(5)])
    assert len(set(alone.tolist())) > 2 and alone.min() > 0          # the counts do vary between images
    assert torch.equal(t(imgs), alone)
    perm = torch.tensor([3, 0, 4, 1, 2])
    assert torch.equal(t(imgs[perm]), alone[perm])
    other = torch.cat([torch.rand(3, 6, generator=g), imgs[2:3], torch.rand(2, 6, generator=g), imgs[0:1]])
    y = t(other)
    assert y[3] == alone[2] and y[6] == alone[0]
    # equal images get equal draws; different images or seeds get different ones; still Bernoulli(p)
    x = torch.tensor([[0.25, 0.25, 0.25], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]])
    s = poisson_spikes(x, 4000, seed=1)
    assert torch.equal(s[:, 0], s[:, 2]) and torch.equal(s[:, 1], poisson_spikes(x[1:2], 4000, seed=1)[:, 0])
    assert not torch.equal(s, poisson_spikes(x, 4000, seed=2))
    assert not torch.equal(s[:, 0], poisson_spikes(x[0:1] + 1e-3, 4000, seed=1)[:, 0])
    assert abs(s[:, 0].mean().item() - 0.25) < 0.02 and abs(s[:, 1].mean().item() - 0.5) < 0.02


def test_spiking_errors():
    net = tiny_snn()
    with pytest.raises(ConfigError, match="lif"):
        SpikingTarget(net, layer="lin")                       # not a spiking layer; lists lif
    with pytest.raises(ConfigError, match="valid units: 0..1"):
        SpikingTarget(net, unit=5, input_shape=(2,))
    with pytest.raises(ConfigError, match="readout"):
        SpikingTarget(net, readout="mean")
    with pytest.raises(ConfigError, match="T"):
        SpikingTarget(net, T=0)
    with pytest.raises(ConfigError, match="no snnTorch spiking layers"):
        SpikingTarget(nn.Linear(2, 2))


# -- embedded models and registry ----------------------------------------------------

def test_registry_factories_and_trained_digits_models():
    from mango.data import digits
    x, y = digits("test")
    cnn = registry.create("target", "cnn-digits", {"unit": 0})
    snnt = registry.create("target", "snn-digits", {"unit": 0})
    assert not cnn.noisy and cnn.differentiable and snnt.differentiable and not snnt.noisy
    for t in (cnn, snnt):
        with torch.no_grad():
            a = t(x)
        assert a.shape == (len(y),)
        assert a[y == 0].mean() > a[y != 0].mean() + 0.3 * a.std()
    rate = snnt(x)
    assert rate.min() >= 0 and rate.max() <= 1
    with pytest.raises(ConfigError, match="unknown parameter"):
        registry.create("target", "snn-digits", {"neuron": 0})
    with pytest.raises(ConfigError, match="spiking_out"):
        registry.create("target", "snn-digits", {"layer": "spiking_ou"})
    with pytest.raises(ConfigError, match="valid units: 0..9"):
        registry.create("target", "cnn-digits", {"unit": 10})


def test_embedded_accuracy():
    from mango.data import digits
    from mango.targets.digits import SNN_T, WEIGHTS_DIR, build_digits_cnn, build_digits_snn, load_weights
    from mango.targets.snn_fast import FastSNN
    x, y = digits("test")
    cnn = load_weights(build_digits_cnn(), WEIGHTS_DIR / "cnn_digits.pt", "x")
    snn_net = load_weights(build_digits_snn(), WEIGHTS_DIR / "snn_digits.pt", "x")
    with torch.no_grad():
        assert (cnn(x).argmax(1) == y).float().mean() > 0.9
        c, _ = FastSNN(snn_net, backend="torch").run(x, SNN_T)
        assert (c.argmax(1) == y).float().mean() > 0.85
    assert sum(f.stat().st_size for f in WEIGHTS_DIR.iterdir()) < 2 * 1024 * 1024


def test_paper_weights_errors(tmp_path):
    from mango.targets.paper_snn import load_paper_snn
    bad = tmp_path / "snn_cifar10.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="snn_cifar10.pt"):
        load_paper_snn(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_paper_snn(tmp_path / "missing.pt")
    torch.save({"conv0.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="other.pt"):
        load_paper_snn(tmp_path / "other.pt")


def test_paper_target_factory(paper_weights):
    t = registry.create("target", "snn-cifar10", {"weights": str(paper_weights), "T": 8, "unit": 3,
                                                     "backend": "torch"})
    assert t.uses_fast_path and t.layer == "final_spiking"
    x = torch.randn(2, 3, 32, 32)
    a = t(x)
    rate = torch.from_numpy(t.reported(a.numpy()))           # graded by default: the plain rate comes back
    assert a.shape == (2,) and ((rate * 8) == (rate * 8).round()).all()
    assert (rate <= a).all() and (a < rate + 1 / 8).all() and t.reported_name == "rate"
    with pytest.raises(ConfigError, match="spiking1"):
        registry.create("target", "snn-cifar10", {"weights": str(paper_weights), "layer": "spiking_1"})
