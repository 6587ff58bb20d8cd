"""`layout-elite`: a CMA-ES search over colour layouts encoded by the VQ-VAE, then elite from its best codes."""
from __future__ import annotations

import numpy as np
import pytest

from mango import registry
from mango.errors import ConfigError
from mango.loop import maximize
from mango.objective import Objective
from mango.optimizers.handoff import LayoutThenElite
from mango.optimizers.layout import LayoutCMA


def _objective(generator: str = "vqvae-digits", unit: int = 20):
    return Objective(registry.create("generator", generator, {}),
                     registry.create("target", "snn-digits", {"layer": "spiking1", "unit": unit}))


def test_the_layout_phase_asks_encoded_layouts_then_elite_starts_from_their_best():
    """The first `split` queries are codes of k x k colour layouts through the encoder (each decodes, and
    re-encoding the layout image gives it back); elite then asks the layout phase's best codes first."""
    obj = _objective()
    opt = LayoutThenElite(obj.space, batch_size=50, seed=3, split=60, top=4)
    opt.bind(obj)
    asked, told = [], []
    while len(told) < 60:
        I = opt.ask()
        y = obj(I)
        opt.tell(I, y)
        asked.append(I)
        told.extend(y.tolist())
    assert len(told) == 60 and opt.elite is None and opt.layout is not None
    layouts = np.concatenate(asked)
    assert len({r.tobytes() for r in layouts}) == len(layouts)                 # a code is asked once
    best = sorted(range(60), key=lambda i: -told[i])[:4]
    first = opt.ask()                                                            # elite's first batch
    assert opt.elite is not None
    np.testing.assert_array_equal(first[:4], layouts[best])
    # the layouts are k x k flat patches in [0, 1], grey at the search's start
    Z = np.array([[0.0, 0.0, 0.0, 0.0], [-9.0, 9.0, 0.0, 9.0]])
    x = opt.layout.images(Z)
    assert x.shape == (2, *obj.generator.image_shape) and np.allclose(x[0], 0.5)
    h = x.shape[-1] // 2
    assert x[1, 0, :h, :h].max() < 0.01 and x[1, 0, :h, h:].min() > 0.99 and np.allclose(x[1, 0, h:, :h], 0.5)


def test_a_run_is_reproducible_and_resumes_identically(tmp_path):
    obj = _objective()
    whole = maximize(obj, "layout-elite", budget=200, seed=1, params={"split": 80})
    again = maximize(_objective(), "layout-elite", budget=200, seed=1, params={"split": 80})
    np.testing.assert_array_equal(whole.values, again.values)
    calls = {"n": 0}

    def stop() -> bool:          # stop after three batches (in the layout phase), then resume the folder
        calls["n"] += 1
        return calls["n"] > 3

    part = maximize(_objective(), "layout-elite", budget=200, seed=1, params={"split": 80}, run_dir=tmp_path,
                    stop=stop)
    assert part.interrupted and part.n_queries < 80
    done = maximize(_objective(), "layout-elite", budget=200, seed=1, params={"split": 80}, run_dir=tmp_path)
    np.testing.assert_array_equal(done.values, whole.values)
    assert whole.best_value >= max(whole.values[:80])


def test_without_an_encoder_or_on_a_rig_it_is_elite_alone():
    """The SN-GAN's grid has no encoder, and split=0 asks for no layout phase: either run is exactly elite's
    (the same seed and batch size); a noisy objective (a rig) gets elite in its noise mode."""
    gan = _objective("sngan-digits")
    a = maximize(gan, "layout-elite", budget=120, seed=0)
    b = maximize(_objective("sngan-digits"), "elite", budget=120, seed=0)
    np.testing.assert_array_equal(a.values, b.values)
    c = maximize(_objective(), "layout-elite", budget=120, seed=0, params={"split": 0})     # split=0: elite
    d = maximize(_objective(), "elite", budget=120, seed=0)
    np.testing.assert_array_equal(c.values, d.values)

    class Noisy:
        noisy = True

    obj = _objective()
    opt = LayoutThenElite(obj.space, seed=0)
    noisy = Noisy()
    noisy.generator, noisy.space = obj.generator, obj.space
    opt.bind(noisy)
    assert opt.layout is None and opt.elite is not None and opt.elite.noisy


def test_bad_parameters_and_a_generator_without_an_encoder_are_named():
    obj = _objective("sngan-digits")
    with pytest.raises(ConfigError, match="needs a generator with encode"):
        LayoutCMA(_objective().space).bind(obj)
    with pytest.raises(ConfigError, match="sigma must be a number > 0"):
        LayoutCMA(_objective().space, sigma=0)
    with pytest.raises(ConfigError, match="split"):
        maximize(_objective(), "layout-elite", budget=20, params={"split": -1})


def test_the_layout_phase_is_40_percent_of_a_short_run_and_400_queries_of_a_long_one():
    """The default split follows the run's budget (the loop passes it): 400 of 1,000 as tuned, 40 % of a
    shorter run so that elite still gets the rest, 400 of a longer one; a split given by the user wins."""
    from mango.optimizers import make_optimizer

    space = _objective().space
    split = {b: make_optimizer("layout-elite", space, budget=b).split for b in (30, 50, 100, 300, 1000, 5000)}
    assert split == {30: 0, 50: 20, 100: 40, 300: 120, 1000: 400, 5000: 400}   # 30: less than one generation
    assert LayoutThenElite(space).split == 400                                   # no budget known
    assert make_optimizer("layout-elite", space, budget=100, params={"split": 90}).split == 90
    obj = _objective()
    opt = make_optimizer("layout-elite", obj.space, budget=100, seed=0)
    res = maximize(obj, opt, budget=100)
    assert res.n_queries == 100 and opt._layout_told == 40 and opt.elite is not None   # elite ran the last 60


def test_elite_parameters_given_to_the_default_reach_its_elite_phase(tmp_path):
    """Elite's parameters (``kernel_pool``, ``uniform_pick``, ``starts``, ...) are taken by layout-elite and
    handed to its elite phase; a bad value is refused when the optimizer is built, not after the layout
    phase; user starts follow the layout phase's best codes in place of the natural ones."""
    from mango.optimizers import make_optimizer

    obj = _objective()
    opt = make_optimizer("layout-elite", obj.space, budget=100, seed=0,
                         params={"uniform_codes": 5, "elite": 3, "starts": None, "restart_after": 250})
    maximize(obj, opt, budget=100)
    assert len(opt.elite._uniform) == 5 and opt.elite.n_elite == 3 and opt.elite.restart_after == 250
    with pytest.raises(ConfigError, match="uniform_pick must be one of"):
        make_optimizer("layout-elite", obj.space, params={"uniform_pick": "best"})
    with pytest.raises(ConfigError, match="unknown parameter 'elit' .* valid parameters: .*split.*kernel_pool"):
        make_optimizer("layout-elite", obj.space, params={"elit": 3})
    mine = obj.space.sample(np.random.default_rng(5), 3)
    np.save(tmp_path / "mine.npy", mine)
    opt = LayoutThenElite(obj.space, batch_size=20, seed=1, split=40, top=2, starts=str(tmp_path / "mine.npy"))
    opt.bind(obj)
    while opt.elite is None or opt.n_told < 40:
        I = opt.ask()
        opt.tell(I, obj(I))
        if opt.elite is not None:
            break
    np.testing.assert_array_equal(I[2:5], mine)              # after the layout phase's 2 best codes


def test_a_resume_with_other_elite_settings_is_refused(tmp_path):
    """Elite's settings live in a dict, not in scalar attributes, so they are put in the run identity by
    ``identity_params``: a resume through the API with other ones is refused, as it is for ``elite``."""
    from mango.errors import MangoError

    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 1

    part = maximize(_objective(), "layout-elite", budget=60, params={"elite": 3}, run_dir=tmp_path, stop=stop)
    assert part.n_queries < 60
    with pytest.raises(MangoError, match="elite.elite"):
        maximize(_objective(), "layout-elite", budget=60, run_dir=tmp_path)
    done = maximize(_objective(), "layout-elite", budget=60, params={"elite": 3}, run_dir=tmp_path)
    assert done.n_queries == 60


def test_a_folder_of_the_old_default_is_refused_with_how_to_resume_it(tmp_path, capsys):
    """A run folder made while elite was the default (no optimizer named) is refused now that the default
    is layout-elite; the message says so and how to resume it (naming elite), which works."""
    from mango.cli import main

    argv = ["run", "--generator", "vqvae-digits", "--target", "snn-digits", "--target-param", "layer=spiking_out",
            "--target-param", "unit=3", "--budget", "10", "-q", "--out", str(tmp_path / "r")]
    assert main(argv + ["--optimizer", "elite"]) == 0
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "default optimizer changed from elite to layout-elite" in err and "--optimizer elite" in err, err
    assert main(argv + ["--optimizer", "elite"]) == 0


def test_a_run_of_the_first_layout_step_0_5_is_refused_with_how_to_resume_it(tmp_path):
    """The default first layout step changed from 0.5 to 0.3: an interrupted run made with 0.5 (as the default
    then made it) is refused by its recorded identity, the message says how to resume it, and that works."""
    from mango.errors import MangoError

    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 2

    part = maximize(_objective(), "layout-elite", budget=60, params={"sigma": 0.5}, run_dir=tmp_path, stop=stop)
    assert 0 < part.n_queries < 60
    with pytest.raises(MangoError, match=r"optimizer.sigma 0.5 -> 0.3.*--opt-param sigma=0.5"):
        maximize(_objective(), "layout-elite", budget=60, run_dir=tmp_path)
    done = maximize(_objective(), "layout-elite", budget=60, params={"sigma": 0.5}, run_dir=tmp_path)
    assert done.n_queries == 60
