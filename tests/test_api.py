"""The one-liner (mango.maximize on a model), composable objectives, and models from factories.

Every model test compares MANGO's values with a direct forward pass of the same model.
"""
from __future__ import annotations

import ast
import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import mango
from mango import objectives as ob
from mango.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

# A user's own models, written as a user would (snnTorch tutorial styles, surrogate gradients that
# cannot be pickled). Written to a file so the command line can take them as factories.
USER_NETS = '''
import torch
from torch import nn
import snntorch as snn
from snntorch import surrogate, utils

num_steps = 12


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 4 * 4, 10)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


class TutorialSNN(nn.Module):
    """snnTorch tutorial 5: forward loops over num_steps and returns stacked records [T, B, 10]."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(256, 40)
        self.lif1 = snn.Leaky(beta=0.9, spike_grad=surrogate.fast_sigmoid(slope=25))
        self.fc2 = nn.Linear(40, 10)
        self.lif2 = snn.Leaky(beta=0.9, spike_grad=surrogate.fast_sigmoid(slope=25))

    def forward(self, x):
        x = x.flatten(1)
        mem1 = self.lif1.init_leaky()
        mem2 = self.lif2.init_leaky()
        spk2_rec, mem2_rec = [], []
        for step in range(num_steps):
            cur1 = self.fc1(x)
            spk1, mem1 = self.lif1(cur1, mem1)
            cur2 = self.fc2(spk1)
            spk2, mem2 = self.lif2(cur2, mem2)
            spk2_rec.append(spk2)
            mem2_rec.append(mem2)
        return torch.stack(spk2_rec, dim=0), torch.stack(mem2_rec, dim=0)


def step_snn():
    """snnTorch tutorial 6 style: one time step per call, init_hidden neurons."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Flatten(), nn.Linear(256, 40),
                        snn.Leaky(beta=0.8, init_hidden=True, spike_grad=surrogate.atan()),
                        nn.Linear(40, 10),
                        snn.Leaky(beta=0.8, init_hidden=True, output=True, spike_grad=surrogate.atan()))
    with torch.no_grad():
        net[1].weight.mul_(3.0)
        net[3].weight.mul_(3.0)
    return net


def cnn():
    torch.manual_seed(0)
    return CNN().eval()


def tutorial_snn():
    torch.manual_seed(0)
    net = TutorialSNN()
    with torch.no_grad():
        net.fc1.weight.mul_(3.0)
        net.fc2.weight.mul_(3.0)
    return net
'''


@pytest.fixture()
def nets(tmp_path, monkeypatch):
    (tmp_path / "user_nets_api.py").write_text(USER_NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("user_nets_api", None)
    mod = importlib.import_module("user_nets_api")
    yield mod
    sys.modules.pop("user_nets_api", None)


def _hook(model, layer, x):
    box = {}
    h = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: box.setdefault("o", o))
    try:
        out = model(x)
    finally:
        h.remove()
    return box["o"], out


def _codes(vis, n=6, seed=1):
    """A few random codes of the run's space, decoded to images by the run's own generator."""
    space = vis.objective.space
    I = np.random.default_rng(seed).integers(0, space.n, size=(n, space.d))
    return vis.objective.images(I)


# -- objective algebra ----------------------------------------------------------

def test_objective_strings_parse_to_units_and_round_trip():
    assert ob.parse("conv2:5") == ob.channel("conv2", 5)
    assert ob.parse("conv2:5@(3,4)") == ob.neuron("conv2", 5, 3, 4) == ob.unit("conv2", 5, (3, 4))
    assert ob.parse("output:3") == ob.parse("logits:3") == ob.class_logit(3)
    assert ob.parse("softmax:2") == ob.class_prob(2)
    assert ob.parse("mem(lif2:1)") == ob.membrane("lif2", 1)
    assert ob.parse("features.3:0") == ob.channel("features.3", 0)
    assert ob.parse("0:2") == ob.channel("0", 2)                         # nn.Sequential child names
    for s in ["conv2:5 - 0.5*output:3", "2*(a:1 + b:2) - a:1", "-fc:1 + 1e-3*mem(lif:0@(1,2))", "x:1/4"]:
        e = ob.parse(s)
        assert ob.parse(str(e)) == e


def test_objective_algebra():
    a, b = ob.channel("conv2", 5), ob.class_logit(3)
    e = a - 0.5 * b
    assert dict((str(t), w) for w, t in e) == {"conv2:5": 1.0, "output:3": -0.5}
    assert 2.0 * a == a * 2.0 == a + a == ob.parse("2*conv2:5")
    assert (a + b) - b == a                                              # equal terms merge
    assert sum([a, b, a]) == ob.parse("2*conv2:5 + output:3")
    assert a + "fc:1" == ob.parse("conv2:5 + fc:1")
    assert -a / 4 == ob.parse("-0.25*conv2:5")
    assert e.layers == ["conv2", "output"] and a.single == ob.Term("conv2", 5)
    vals = {ob.Term("conv2", 5): torch.tensor([1.0, 2.0]), ob.Term("output", 3): torch.tensor([4.0, 0.0])}
    assert torch.equal(e.combine(vals.__getitem__), torch.tensor([-1.0, 2.0]))
    with pytest.raises(TypeError):
        a * "x"


@pytest.mark.parametrize("bad", ["conv2", "conv2:x", "conv2:5@(a)", "2*", "fc:1 +", "fc:1 $", "softmax:1@(2)", ""])
def test_bad_objective_strings_name_the_problem(bad):
    with pytest.raises(ConfigError, match="objective"):
        ob.parse(bad)


# -- a torch CNN ------------------------------------------------------------------

def test_one_liner_torch_cnn_equals_direct_forward(nets, tmp_path):
    model = nets.cnn()
    vis = mango.maximize(model, "conv2:5", generator="vqvae-digits", optimizer="random", budget=60, seed=0)
    assert vis.trace.shape == (60,) and vis.best_value == vis.trace.max()
    with torch.no_grad():
        out, _ = _hook(model, "conv2", vis.best_image[None])
        assert float(out[0, 5].mean()) == pytest.approx(vis.best_value, abs=0, rel=1e-6)
        x = _codes(vis)
        for spec, direct in [
            ("conv2:5", lambda: _hook(model, "conv2", x)[0][:, 5].mean((1, 2))),
            ("conv2:5@(3,4)", lambda: _hook(model, "conv2", x)[0][:, 5, 3, 4]),
            ("output:3", lambda: model(x)[:, 3]),
            ("softmax:3", lambda: torch.softmax(model(x), 1)[:, 3]),
            ("conv2:5 - 0.5*output:3", lambda: _hook(model, "conv2", x)[0][:, 5].mean((1, 2)) - 0.5 * model(x)[:, 3]),
        ]:
            t = mango.registry.create("target", "model", {}, model=model, objective=spec)
            assert torch.allclose(t(x), direct(), rtol=1e-6, atol=1e-7), spec
    # save() writes the folder the CLI writes
    folder = vis.save(tmp_path / "cnn")
    assert {p.name for p in folder.iterdir()} >= {"result.json", "history.npz", "best.png"}
    res = json.loads((folder / "result.json").read_text())
    assert res["best_value"] == vis.best_value and res["config"]["target"]["objective"] == "conv2:5"
    assert np.array_equal(np.load(folder / "history.npz")["values"], vis.trace)


def test_one_liner_is_reproducible_and_objective_first_is_the_loop(nets):
    model = nets.cnn()
    a = mango.maximize(model, "fc:3", generator="vqvae-digits", optimizer="random", budget=30, seed=4)
    b = mango.maximize(model, ob.parse("fc:3"), generator="vqvae-digits", optimizer="random", budget=30, seed=4)
    assert np.array_equal(a.trace, b.trace) and np.array_equal(a.best_code, b.best_code)
    from mango import loop
    r = mango.maximize(a.objective, "random", 30, 4)
    assert isinstance(r, loop.Result) and np.array_equal(r.values, a.trace)


def test_one_liner_errors(nets):
    with pytest.raises(ConfigError, match="generator"):
        mango.maximize(nets.cnn(), "fc:3", budget=10)
    with pytest.raises(ConfigError, match="conv9"):
        mango.maximize(nets.cnn(), "conv9:1", generator="vqvae-digits", budget=10)
    with pytest.raises(ConfigError, match="out of range"):
        mango.maximize(nets.cnn(), "conv2:99", generator="vqvae-digits", budget=10)
    with pytest.raises(ConfigError, match="spiking parameter"):
        mango.maximize(nets.cnn(), "fc:3", generator="vqvae-digits", budget=10, T=16)
    with pytest.raises(ConfigError, match="membrane"):
        mango.maximize(nets.cnn(), "mem(fc:3)", generator="vqvae-digits", budget=10)


# -- snnTorch nets ------------------------------------------------------------------

def test_one_liner_tutorial_snn_equals_direct_forward(nets):
    net = nets.tutorial_snn()
    vis = mango.maximize(net, "lif2:3", generator="vqvae-digits", optimizer="random", budget=40, seed=0)
    t = vis.objective.target
    assert t.mode == "loop" and t.T == nets.num_steps
    assert t.layers((1, 16, 16)) == [("fc1", (40,)), ("lif1", (40,)), ("fc2", (10,)), ("lif2", (10,)),
                                     ("output", (10,))]
    with torch.no_grad():
        spk, mem = net(vis.best_image[None])
        # the search score is the graded readout; what the user sees is the exact firing rate
        assert t.graded and vis.best_value == float(spk[:, 0, 3].double().sum()) / nets.num_steps
        assert vis.best_value <= vis.best_score < vis.best_value + 1 / nets.num_steps
        x = _codes(vis, 8)
        spk, mem = net(x)
        rate = spk[:, :, 3].mean(0)
        assert rate.max() > 0 and rate.min() < 1                     # the test is not vacuous
        np.testing.assert_array_equal(vis.activation(x), spk[:, :, 3].double().sum(0).numpy() / nets.num_steps)
        tgt = mango.registry.create("target", "model", {}, model=net, objective="output:3 + 0.01*mem(lif2:3)")
        assert torch.allclose(tgt(x), rate + 0.01 * mem[:, :, 3].mean(0), rtol=0, atol=1e-6)
        # reset per stimulus: values do not depend on earlier calls or on the batch
        assert torch.equal(tgt(x), tgt(x)) and torch.equal(tgt(x[2:3]), tgt(x)[2:3])
    # printing the result gives one readable line (the dataclass repr printed every array in full)
    first = int(np.argmax(vis.result.values >= vis.best_score)) + 1
    assert repr(vis) == (f"Visualization('lif2:3' over T={nets.num_steps} steps: best score {vis.best_score:.6g} "
                         f"(rate {vis.best_value:.6g}) at "
                         f"query {first} of 40, optimizer 'random', seed 0, {vis.result.seconds:.1f} s, "
                         f"best_image [1, 16, 16]; best_value, trace, best_so_far, image, show(), save(folder))")
    assert repr(vis.result).startswith(f"Result(best_value {vis.best_score:.6g} (rate ") and "array" not in repr(vis.result)
    with pytest.raises(ConfigError, match=f"loops over {nets.num_steps} time steps"):
        mango.maximize(net, "lif2:3", generator="vqvae-digits", budget=10, T=32)
    with pytest.raises(ConfigError, match="softmax"):
        mango.maximize(net, "softmax:3", generator="vqvae-digits", budget=10)


def test_one_liner_step_snn_equals_direct_loop(nets):
    from snntorch import utils
    net = nets.step_snn()
    vis = mango.maximize(net, "4:3", generator="vqvae-digits", optimizer="random", budget=40, seed=0, T=20)
    t = vis.objective.target
    assert t.mode == "step" and t.T == 20

    def direct(x, T=20):
        utils.reset(net)
        c = m = 0
        for _ in range(T):
            s, mem = net(x)
            c, m = c + s[:, 3], m + mem[:, 3]
        utils.reset(net)
        return c / T, m / T, c.double() / T

    with torch.no_grad():
        x = torch.cat([vis.best_image[None], _codes(vis, 7)])
        rate, mem, exact = direct(x)
        assert rate.max() > 0
        assert float(exact[0]) == vis.best_value
        np.testing.assert_array_equal(vis.activation(x), exact.numpy())
        # the graded score: same on the fast path and the snnTorch loop; readout="rate" is the plain rate
        scores = [mango.registry.create("target", "model", {"T": 20, "fast": fast}, model=net, objective="4:3")(x)
                  for fast in (True, False)]
        assert torch.equal(scores[0], scores[1]) and (scores[0] > exact).any()
        plain = mango.registry.create("target", "model", {"T": 20, "readout": "rate"}, model=net, objective="4:3")
        assert not plain.graded and torch.equal(plain(x), rate)
        for fast in (True, False):
            tgt = mango.registry.create("target", "model", {"T": 20, "fast": fast}, model=net,
                                        objective="output:3 + 0.01*mem(4:3)")
            assert torch.allclose(tgt(x), rate + 0.01 * mem, rtol=0, atol=1e-6)


def test_torch_unit_refuses_snntorch_nets_naming_the_spiking_route(nets):
    from mango.targets.torch_unit import UnitTarget, torch_unit
    for net in (nets.tutorial_snn(), nets.step_snn()):
        with pytest.raises(ConfigError, match="snnTorch neurons.*snn-unit"):
            torch_unit(net, layer="fc1" if hasattr(net, "fc1") else "1", unit=0)
        with pytest.raises(ConfigError, match="spiking route"):
            UnitTarget(net)


# -- the command line: models from factories ------------------------------------------

def _decode_best(out: Path) -> torch.Tensor:
    gen = mango.registry.create("generator", "vqvae-digits")
    code = np.asarray(json.loads((out / "result.json").read_text())["best_code"])[None]
    with torch.no_grad():
        return gen(gen.space.decode(code, "cpu"))


def test_cli_takes_models_from_factories(nets, tmp_path, capsys):
    from mango.cli import main
    out = tmp_path / "snn"
    assert main(["run", "--generator", "vqvae-digits", "--target", "snn-unit",
                 "--target-param", "model=user_nets_api:tutorial_snn", "--target-param", "objective=lif2:3",
                 "--optimizer", "random", "--budget", "30", "--seed", "0", "--out", str(out), "-q"]) == 0
    res = json.loads((out / "result.json").read_text())
    best = res["reported"]["at_best_score"]   # the firing rate (the score is the graded readout)
    assert res["reported"]["name"] == "rate" and best <= res["best_value"] < best + 1 / 12
    with torch.no_grad():
        spk, _ = nets.tutorial_snn()(_decode_best(out))
    assert float(spk[:, 0, 3].double().sum()) / 12 == best
    assert (out / "best.png").is_file() and (out / "history.npz").is_file()

    out = tmp_path / "cnn"
    assert main(["run", "--generator", "vqvae-digits", "--target", "torch-unit",
                 "--target-param", f"model={tmp_path / 'user_nets_api.py'}:cnn",
                 "--target-param", "objective=conv2:5@(1,2) + 0.5*output:3",
                 "--optimizer", "random", "--budget", "30", "--seed", "0", "--out", str(out), "-q"]) == 0
    best = json.loads((out / "result.json").read_text())["best_value"]
    model = nets.cnn()
    with torch.no_grad():
        x = _decode_best(out)
        o, logits = _hook(model, "conv2", x)
        assert float(o[0, 5, 1, 2] + 0.5 * logits[0, 3]) == pytest.approx(best, rel=1e-6)
    # torch-unit refuses the spiking net and names the route; a bad factory names itself
    capsys.readouterr()
    assert main(["run", "--generator", "vqvae-digits", "--target", "torch-unit",
                 "--target-param", "model=user_nets_api:tutorial_snn", "--budget", "5", "-q"]) == 2
    assert "snn-unit" in capsys.readouterr().err
    assert main(["run", "--generator", "vqvae-digits", "--target", "snn-unit",
                 "--target-param", "model=user_nets_api:nope", "--budget", "5", "-q"]) == 2
    err = capsys.readouterr().err
    assert "'nope'" in err and "tutorial_snn" in err


# -- the engine reaches the adapters only through the registry -----------------------

def test_engine_does_not_import_targets_or_generators():
    bad = []
    for path in sorted((ROOT / "mango").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module if node.level == 0 else "mango." + node.module]
            for n in names:
                if n.startswith(("mango.targets", "mango.generators")):
                    bad.append(f"{path.relative_to(ROOT)}: {n}")
    assert not bad, bad


def test_one_liner_can_show_progress_and_serve_the_live_view(nets, tmp_path, capsys):
    """mango.maximize(..., progress=True, run_dir=..., watch=...) shows a bar with the firing rate and serves the
    live page of the run's folder (the URL is kept on the result); watch without a folder is refused."""
    import urllib.request

    from mango.watch import stop

    net = nets.tutorial_snn()
    vis = mango.maximize(net, "lif2:3", generator="vqvae-digits", optimizer="random", budget=40, seed=0,
                         progress=True, run_dir=tmp_path / "run", watch="127.0.0.1:0")
    try:
        err = capsys.readouterr().err
        assert f"rate={vis.best_value:.4g} (score {vis.best_score:.4g})" in err and "40/40" in err
        assert vis.url and vis.url.startswith("http://127.0.0.1:") and f"live view: {vis.url}" in err
        page = urllib.request.urlopen(vis.url, timeout=10).read().decode()
        assert "<html" in page.lower()
        state = json.loads(urllib.request.urlopen(vis.url + "api/state", timeout=10).read().decode())
        assert state                                                  # the page reads the finished run's folder
    finally:
        stop(vis.url)
    with pytest.raises(ConfigError, match="watch needs run_dir"):
        mango.maximize(net, "lif2:3", generator="vqvae-digits", budget=10, watch=True)
    with pytest.raises(ConfigError, match="watch must be True, False or a"):
        mango.maximize(net, "lif2:3", generator="vqvae-digits", budget=10, run_dir=tmp_path / "x", watch=8765)


def test_a_script_that_watched_its_run_exits_cleanly(tmp_path):
    """A script that ran mango.maximize(..., watch=...) and read the page ended, about 4 times in 5, in
    'terminate called without an active exception' (exit code 134): the server thread was killed at
    interpreter exit after torch had run in both threads. Servers are now stopped at exit."""
    import subprocess

    script = tmp_path / "watched.py"
    script.write_text(
        "import json, sys, urllib.request\n"
        "import torch.nn as nn, mango\n"
        "m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())\n"
        "vis = mango.maximize(m, '0:1', generator='vqvae-digits', budget=40, run_dir=sys.argv[1], watch='127.0.0.1:0')\n"
        "state = json.loads(urllib.request.urlopen(vis.url + 'api/state', timeout=10).read())\n"
        "assert state['n_queries'] == 40, state\n")
    for i in range(3):
        done = subprocess.run([sys.executable, str(script), str(tmp_path / f"run{i}")], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]


def test_query_index_puts_the_gradient_trace_on_the_query_scale():
    model = mango.registry.create("target", "cnn-digits").model
    g = mango.maximize(model, "output:3", generator="vqvae-digits", optimizer="gradient", budget=60, seed=0)
    r = mango.maximize(model, "output:3", generator="vqvae-digits", optimizer="random", budget=30, seed=0)
    assert len(g.trace) < 60 and g.query_index.shape == g.trace.shape and g.query_index[-1] == 60
    assert np.all(np.diff(g.query_index) > 0)
    assert np.array_equal(r.query_index, np.arange(1, 31))
