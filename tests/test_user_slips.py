"""Slips a first-time user made while following the README (a usability review): each gave a wrong answer,
a raw traceback from deep inside torch, or a message that pointed elsewhere. Each test fails on the code
before the fix."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import mango
from mango.cli import main
from mango.errors import ConfigError
from mango.objectives import parse


@pytest.fixture(scope="module")
def cnn_run():
    model = mango.registry.create("target", "cnn-digits").model
    return mango.maximize(model, "conv2:5", generator="vqvae-digits", optimizer="random", budget=20, seed=0)


def test_activation_of_best_image_as_it_is(cnn_run):
    """``res.activation(res.best_image)`` ([C, H, W]) returned 32 values of a misread batch, silently."""
    one = cnn_run.activation(cnn_run.best_image)
    assert one.shape == (1,) and one[0] == pytest.approx(cnn_run.best_value, rel=1e-5)
    assert np.array_equal(cnn_run.activation(cnn_run.best_image[None].numpy()), one)     # numpy is taken
    with pytest.raises(ConfigError, match=r"got torch.uint8 \(a display image such as res.image is uint8\)"):
        cnn_run.activation(torch.tensor(cnn_run.image)[None, None])
    with pytest.raises(ConfigError, match=r"takes images \[k, 1, 16, 16\] or one image \[1, 16, 16\].*got shape \[16, 16\]"):
        cnn_run.activation(cnn_run.best_image[0])


def test_an_input_shape_the_model_does_not_take_is_one_line(tmp_path, capsys):
    model = mango.registry.create("target", "cnn-digits").model
    with pytest.raises(ConfigError, match=r"input_shape \[3, 32, 32\] does not fit Sequential: .*expected input"
                                          r".* give the per-sample shape the model takes"):
        mango.maximize(model, "conv2:5", generator="vqvae-digits", budget=20, target_params={"input_shape": [3, 32, 32]})
    snn = mango.registry.create("target", "snn-digits").net
    with pytest.raises(ConfigError, match=r"failed on one image of shape \(1, 3, 32, 32\)"):   # its own check
        mango.maximize(snn, "spiking_out:3", generator="vqvae-digits", budget=20, target_params={"input_shape": [3, 32, 32]})
    assert main(["layers", "torch-unit", "--target-param", "model=targets.digits:build_digits_cnn",
                 "--target-param", "input_shape=[3,32,32]"]) == 2                    # was a traceback, exit 1
    assert "input_shape [3, 32, 32] does not fit" in capsys.readouterr().err


def test_a_typo_of_maximizes_own_keyword_is_named_as_such():
    """``budgt=3`` was reported as an unknown *target* parameter, with a list that did not name budget."""
    model = mango.registry.create("target", "cnn-digits").model
    with pytest.raises(ConfigError, match=r"unknown keyword 'budgt' of mango.maximize; valid choices: budget, "):
        mango.maximize(model, "conv2:5", generator="vqvae-digits", budgt=3)
    with pytest.raises(ConfigError, match=r"unknown keyword 'optimiser' of mango.maximize; valid choices: optimizer"):
        mango.maximize(model, "conv2:5", generator="vqvae-digits", optimiser="protes")


def test_an_unknown_function_in_an_objective_is_named():
    with pytest.raises(ConfigError, match=r"unknown function 'membrane': the only function is mem\(layer:unit\)"):
        parse("membrane(lif2:3)")
    assert str(parse("0.5*fc:3 - mem(lif2:1)")) == "0.5*fc:3 - mem(lif2:1)"


def test_a_rerun_of_a_finished_command_says_nothing_was_evaluated(tmp_path, capsys):
    def args(budget=20):
        return ["run", "--problem", "separable", "--problem-param", "d=4", "--problem-param", "n=8", "--budget",
                str(budget), "--optimizer", "random", "--out", str(tmp_path / "r")]

    assert main(args()) == 0
    assert "holds a finished run" not in capsys.readouterr().err
    assert main(args()) == 0
    err = capsys.readouterr().err
    assert "holds a finished run of these settings: its stored result (nothing was evaluated" in err
    assert "20/20" not in err                                             # no progress bar racing to the end
    assert main(args(40)) == 2
    assert "differs in: budget 20 -> 40); a run's budget cannot be changed in its folder" in capsys.readouterr().err


def test_layers_without_an_input_shape_names_the_flag(capsys):
    assert main(["layers", "torch-unit", "--target-param", "model=targets.digits:build_digits_cnn"]) == 2
    assert "--target-param input_shape=[1,16,16]" in capsys.readouterr().err


def test_a_commands_live_view_says_it_ends_with_the_command(tmp_path, capsys):
    """The page of a short `mango run --watch` was gone within seconds, with nothing saying so."""
    from mango.watch import stop

    args = ["run", "--problem", "separable", "--problem-param", "d=4", "--problem-param", "n=8", "--budget", "20",
            "--optimizer", "random", "-q", "--out", str(tmp_path / "r"), "--watch", "127.0.0.1:0"]
    assert main(args) == 0
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("live view: "))
    stop(line.split()[2])
    assert f"(served while this command runs; `mango watch {tmp_path / 'r'}` shows the folder afterwards)" in line


def test_serving_the_live_view_leaves_the_users_log_handlers_open(tmp_path):
    """uvicorn's default logging set-up (dictConfig) closed every log handler of the process: a notebook's
    log file, or jax's absl handler, which then closed the stream it held (pytest's own capture, in one
    order of the tests). The server now leaves logging alone."""
    import logging

    from mango.watch import serve_option, stop

    class Watched(logging.Handler):
        closed = False

        def emit(self, record):
            pass

        def close(self):
            Watched.closed = True
            super().close()

    h = Watched()
    logging.getLogger("a_users_logger").addHandler(h)
    try:
        url = serve_option("127.0.0.1:0", tmp_path, command=False)
        stop(url)
        assert not Watched.closed
    finally:
        logging.getLogger("a_users_logger").removeHandler(h)


def test_an_embedded_spiking_net_runs_at_its_own_steps_unless_told_otherwise():
    """The digits SNN was trained and is run by `snn-digits` at T=16, but `mango.maximize(target.net, ...)` ran it
    at the generic default T=32 without a word. The net now carries num_steps, which a step module's T follows."""
    target = mango.registry.create("target", "snn-digits", {"T": 16})
    run = dict(generator="vqvae-digits", optimizer="random", budget=10, seed=0)
    own = mango.maximize(target.net, "spiking_out:1", **run)
    assert own.objective.target.T == 16 and "over T=16 steps" in repr(own)
    assert np.array_equal(own.trace, mango.maximize(target.net, "spiking_out:1", T=16, **run).trace)
    assert mango.maximize(target.net, "spiking_out:1", T=8, **run).objective.target.T == 8
    plain = mango.registry.create("target", "snn-digits").net
    del plain.num_steps                                                    # a user's step module without it
    assert mango.maximize(plain, "spiking_out:1", **run).objective.target.T == 32
