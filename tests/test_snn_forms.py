"""snnTorch nets in the forms users write them, checked against spikes counted independently: neurons
that return synaptic currents before the membrane, neurons whose returned membrane is not what fired,
randomness and train mode. Each case once gave a wrong firing rate without a word."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import snntorch as snn
import torch
from torch import nn

from targets.snn_net import SpikingNetTarget


def _true_rate(net: nn.Module, x: torch.Tensor, layer: int, unit: int, T: int) -> torch.Tensor:
    """Spikes of ``net[layer]``'s ``unit`` over T steps from a plain step loop, every state zeroed first."""
    for m in net.modules():
        if isinstance(m, snn.SpikingNeuron):
            for a in ("mem", "syn", "syn_exc", "syn_inh", "spk"):
                if isinstance(getattr(m, a, None), torch.Tensor):
                    setattr(m, a, torch.zeros_like(getattr(m, a)))
    n = torch.zeros(x.shape[0])
    with torch.no_grad():
        for _ in range(T):
            h = x
            for i, m in enumerate(net):
                h = m(h)
                h = h[0] if isinstance(h, tuple) else h
                if i == layer:
                    n += h[:, unit]
                    break
    return n / T


def _seq(neuron, gain: float = 3.0) -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), neuron(False), nn.Linear(16, 4), neuron(True))
    with torch.no_grad():
        net[1].weight.mul_(gain)
        net[3].weight.mul_(gain)
    return net


NEURONS = {
    "synaptic": lambda out: snn.Synaptic(alpha=0.9, beta=0.8, init_hidden=True, output=out),
    "alpha": lambda out: snn.Alpha(alpha=0.9, beta=0.8, init_hidden=True, output=out),
    "leaky_reset_delay_false": lambda out: snn.Leaky(beta=0.9, init_hidden=True, output=out, reset_delay=False),
    "leaky_inhibition": lambda out: snn.Leaky(beta=0.9, init_hidden=True, output=out, inhibition=True),
}


@pytest.mark.parametrize("kind", sorted(NEURONS))
@pytest.mark.parametrize("readout", ["graded", "rate"])
def test_rate_is_the_count_of_the_spikes_the_neuron_emits(kind, readout):
    net = _seq(NEURONS[kind])
    x = torch.rand(24, 1, 8, 8)
    for layer, unit, expr in ((4, 1, "output:1"), (2, 5, "2:5")):
        target = SpikingNetTarget(net, expr, T=20, readout=readout)
        got = torch.as_tensor(target.reported(target(x).detach().double().numpy()))
        want = _true_rate(net, x, layer, unit, 20).double()
        assert torch.allclose(got, want, atol=1e-9), (kind, expr, got[:6], want[:6])
        assert want.max() > 0          # the units fire on some of the images: the check is not 0 == 0


class _LoopSynaptic(nn.Module):
    """Tutorial-5 style: forward loops over num_steps and returns the records; the neuron returns
    (spk, syn, mem)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.fc, self.lif = nn.Linear(64, 8), snn.Synaptic(alpha=0.9, beta=0.8)

    def forward(self, x):
        syn, mem = self.lif.init_synaptic()
        spk_rec, mem_rec = [], []
        for _ in range(25):
            spk, syn, mem = self.lif(3 * self.fc(x.flatten(1)), syn, mem)
            spk_rec.append(spk)
            mem_rec.append(mem)
        return torch.stack(spk_rec), torch.stack(mem_rec)


def test_a_time_looping_synaptic_net_reads_its_membrane_not_its_current():
    net, x = _LoopSynaptic(), torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        spk, mem = net(x)
    graded = SpikingNetTarget(net, "lif:3")
    assert torch.allclose(torch.as_tensor(graded.reported(graded(x).detach().double().numpy())), spk[:, :, 3].double().mean(0))
    m = SpikingNetTarget(net, "mem(lif:3)")(x).detach()
    assert torch.allclose(m, mem[:, :, 3].mean(0), atol=1e-6)


class _RandomIn(nn.Module):
    """Draws its own input spikes in forward (spikegen.rate style): one image, a different value per call."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.fc, self.lif = nn.Linear(64, 8), snn.Leaky(beta=0.9)

    def forward(self, x):
        mem, rec = self.lif.init_leaky(), []
        for _ in range(20):
            spk, mem = self.lif(4 * self.fc((torch.rand_like(x) < x).float().flatten(1)), mem)
            rec.append(spk)
        return torch.stack(rec)


def test_a_net_that_draws_random_numbers_in_forward_is_named(caplog):
    x = torch.rand(10, 1, 8, 8)
    with caplog.at_level(logging.WARNING, logger="targets.units"):
        SpikingNetTarget(_RandomIn(), "lif:2")(x)
        assert "gives the same image different values" in caplog.text and "spikegen.rate" in caplog.text
        caplog.clear()
        SpikingNetTarget(_LoopSynaptic(), "lif:2")(x)         # a deterministic net: no warning
    assert "different values" not in caplog.text


def test_train_mode_float64_and_a_float_num_steps():
    torch.manual_seed(3)        # one layer: snnTorch's own hidden states stay float32 between float64 layers
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.Dropout(0.5),
                        snn.Leaky(beta=0.9, init_hidden=True, output=True)).double()
    with torch.no_grad():
        net[1].weight.abs_().mul_(0.6)       # drives of about 0.5-1: some images fire, some do not
    net.num_steps = 20.0
    net.train()
    x = torch.rand(12, 1, 8, 8)
    target = SpikingNetTarget(net, "output:1")
    got = torch.as_tensor(target.reported(target(x).detach().double().numpy()))
    assert target.T == 20 and net.training and all(m.training for m in net)
    net.eval()
    want = _true_rate(net, x.double(), 3, 1, 20).double()
    assert torch.allclose(got, want) and want.max() > 0          # the eval-mode rate: dropout was off


def test_a_gradient_call_is_not_taken_for_a_random_net(caplog):
    """The first call of the gradient baseline asks for the plain rate with gradients on; the repeat check
    must not compare it with the graded score of the same image and warn about randomness."""
    net = _seq(NEURONS["synaptic"])
    x = torch.rand(1, 1, 8, 8, requires_grad=True)
    target = SpikingNetTarget(net, "output:1", T=20)
    with caplog.at_level(logging.WARNING, logger="targets.units"), torch.enable_grad():
        target(x)
    with caplog.at_level(logging.WARNING, logger="targets.units"):
        target(torch.rand(6, 1, 8, 8))           # the check runs at the first call without gradients
    assert "different values" not in caplog.text and target._repeat_checked


def test_num_steps_of_numpy_and_tensor_integers_is_t():
    import numpy as np

    for steps in (np.int64(12), torch.tensor(12)):
        net = _seq(NEURONS["synaptic"])
        net.num_steps = steps
        target = SpikingNetTarget(net, "output:1")
        target(torch.rand(2, 1, 8, 8))
        assert target.T == 12


def test_a_run_of_a_users_snn_resumes_without_input_shape(tmp_path):
    """Replaying the journal asks the target for firing rates before any image reached it in the new process;
    a user's net given without input_shape did not know its unit's positions yet, and every re-run of its
    folder failed (finished or not)."""
    import mango

    def run(budget=60):
        return mango.maximize(_seq(NEURONS["synaptic"]), "output:1", generator="vqvae-digits", optimizer="elite",
                              budget=budget, seed=0, run_dir=tmp_path / "run", transform=lambda x: x[..., ::2, ::2])

    first = run()
    assert run().best_value == first.best_value                       # the finished folder: its stored result
    lines = (tmp_path / "run" / "journal.jsonl").read_text().splitlines()
    (tmp_path / "run" / "journal.jsonl").write_text("\n".join(lines[:1]) + "\n")   # as if killed after a batch
    (tmp_path / "run" / "result.json").unlink()
    again = run()
    assert np.array_equal(again.trace, first.trace) and first.best_value > 0


def test_a_users_snn_says_how_close_a_silent_unit_came():
    """The closest-approach line (spikes, late membrane peak against threshold, where) was only given for the
    registered spiking targets; a user's own net now has it too, from the same statistics as the readout."""
    from targets.snn_net import SpikingNetTarget as Target

    torch.manual_seed(5)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), snn.Leaky(beta=0.9, init_hidden=True), nn.Flatten(),
                        nn.Linear(3 * 6 * 6, 4), snn.Leaky(beta=0.9, init_hidden=True, output=True))
    x = torch.rand(5, 1, 8, 8)
    rows = Target(net, "1:2", T=20).approach(x)
    assert len(rows) == 5 and rows[0]["map"] == [6, 6] and rows[0]["threshold"] == 1.0
    target = Target(net, "1:2", T=20)
    rates = target.reported(target(x).detach().double().numpy())
    assert [r["spikes"] for r in rows] == [round(v * 20 * 36) for v in rates]
    assert Target(net, "output:1 + 0.5*output:2", T=20).approach(x) is None       # not one unit: cannot tell


def test_a_net_returning_nan_for_output_is_named_for_its_nan():
    """A forward that returned its spikes times NaN was refused with 'first output (10, 4), expected its spikes
    (10, 4)': the same shapes, and no word of the NaN."""
    class NanOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = _seq(lambda out: snn.Leaky(beta=0.9, init_hidden=True, output=out))

        def forward(self, x):
            spk, mem = self.net(x)
            return spk * float("nan"), mem

    target = SpikingNetTarget(NanOut(), "output:1", T=5)
    with pytest.raises(Exception, match=r"returns non-finite values \(NaN or inf\) in its first output"):
        target(torch.rand(3, 1, 8, 8))
