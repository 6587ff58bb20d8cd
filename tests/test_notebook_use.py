"""mango.maximize as a notebook user meets it: re-run cells, a retrained model, Ctrl-C, showing the image,
and a live view re-served by a re-run cell.

Each test fails on the code before these were handled: a re-run into the same folder after the model
changed returned the old model's values; Ctrl-C lost the run's result; ``plt.imshow(res.best_image)``
failed on ``[1, H, W]`` and nothing drew the image; each ``watch=True`` re-run left a server behind and
moved to another port.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import urllib.request

import numpy as np
import pytest
import torch
from torch import nn

import mango
from mango.errors import ConfigError, MangoError
from mango.fingerprint import weights_fingerprint
from mango.results import finished_result


def _cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU()).eval()


def _run(model, run_dir=None, budget=60, **kw):
    return mango.maximize(model, "2:3", generator="vqvae-digits", optimizer="random", budget=budget, seed=0,
                          run_dir=run_dir, **kw)


def test_fingerprint_follows_weights_not_hidden_state():
    import snntorch as snn

    a, b = _cnn(0), _cnn(0)
    assert weights_fingerprint(a) == weights_fingerprint(b) is not None
    with torch.no_grad():
        b[0].weight[0, 0, 0, 0] += 1e-6
    assert weights_fingerprint(a) != weights_fingerprint(b)
    assert weights_fingerprint(lambda x: x) is None                       # no module: nothing to fingerprint
    net = nn.Sequential(nn.Linear(4, 3), snn.Leaky(beta=0.9, init_hidden=True))
    before = weights_fingerprint(net)
    net(torch.randn(2, 4))                                                # sets the neuron's hidden membrane
    assert weights_fingerprint(net) == before


def test_a_rerun_after_the_model_changed_is_refused_not_answered_with_old_values(tmp_path, capsys):
    model = _cnn()
    first = _run(model, tmp_path / "run")
    capsys.readouterr()
    again = _run(model, tmp_path / "run")                                 # the same cell run again
    assert np.array_equal(again.trace, first.trace)
    assert "holds a finished run of these settings" in capsys.readouterr().err
    with torch.no_grad():
        model[2].weight.mul_(-1.0)                                        # "retrained"
    with pytest.raises(ConfigError, match=r"differs in: objective\.weights.*weights differ"):
        _run(model, tmp_path / "run")
    ident = json.loads((tmp_path / "run" / "identity.json").read_text())
    assert ident["objective"]["weights"].startswith("blake2b:")


def test_a_train_mode_generator_or_a_lazy_model_still_resumes(tmp_path):
    """Buffers a module changes by being run (a train-mode BatchNorm in a user's generator) and a lazy
    module not yet run must not make a folder refuse its own re-run."""
    base = mango.registry.create("generator", "vqvae-digits")

    class Normed:                                   # a user's generator with a BatchNorm left in train mode
        def __init__(self):
            self.base, self.space, self.norm = base, base.space, nn.BatchNorm2d(1)

        def __call__(self, z):
            return self.norm(self.base(z))

    gen = Normed()
    first = mango.maximize(_cnn(), "2:3", generator=gen, optimizer="random", budget=20, seed=0, run_dir=tmp_path / "a")
    again = mango.maximize(_cnn(), "2:3", generator=gen, optimizer="random", budget=20, seed=0, run_dir=tmp_path / "a")
    assert np.array_equal(again.trace, first.trace)
    lazy = nn.Sequential(nn.Flatten(), nn.LazyLinear(5))
    a = mango.maximize(lazy, "output:1", generator="vqvae-digits", optimizer="random", budget=20, run_dir=tmp_path / "b")
    b = mango.maximize(lazy, "output:1", generator="vqvae-digits", optimizer="random", budget=20, run_dir=tmp_path / "b")
    assert np.array_equal(a.trace, b.trace)


def test_a_folder_recorded_before_fingerprints_still_resumes(tmp_path):
    model = _cnn()
    first = _run(model, tmp_path / "run")
    path = tmp_path / "run" / "identity.json"
    ident = json.loads(path.read_text())
    del ident["objective"]["weights"], ident["objective"]["structure"]     # as an older version wrote it
    path.write_text(json.dumps(ident))
    assert np.array_equal(_run(model, tmp_path / "run").trace, first.trace)


def test_a_rerun_with_other_layers_or_another_transform_is_refused(tmp_path, capsys):
    """Same weights, another computation: a stored result (or a partial journal) of the first is not the
    second's. Before, only the weights and the model's class name were compared, and both calls were
    answered with the first call's values (or a partial run went on with the other objective)."""
    model = _cnn()
    first = _run(model, tmp_path / "run")
    other = nn.Sequential(*(nn.Tanh() if isinstance(m, nn.ReLU) else m for m in model)).eval()  # same weights
    with pytest.raises(ConfigError, match=r"differs in: objective\.structure.*layers differ"):
        _run(other, tmp_path / "run")
    with pytest.raises(ConfigError, match=r"differs in: objective\.transform.*transform differs"):
        _run(model, tmp_path / "run", transform=lambda x: 1 - x)
    assert np.array_equal(_run(model, tmp_path / "run").trace, first.trace)   # its own settings still answer
    capsys.readouterr()

    def scaled(k):
        return lambda x: x * k
    a = _run(model, tmp_path / "t", transform=scaled(2.0))
    assert np.array_equal(_run(model, tmp_path / "t", transform=scaled(2.0)).trace, a.trace)   # the same code and value
    with pytest.raises(ConfigError, match=r"objective\.transform"):
        _run(model, tmp_path / "t", transform=scaled(3.0))                 # the same code, another value
    with pytest.raises(ConfigError, match=r"objective\.transform"):
        _run(model, tmp_path / "t")                                        # none at all


def test_a_transform_with_its_own_counter_resumes_and_an_older_folder_with_a_transform_too(tmp_path):
    """A review found two wrong refusals: a transform that counts its calls (``nonlocal n; n += 1``) changed its
    own mark by running, and a folder recorded before the transform mark existed was refused for a call with
    its own transform."""
    def counting():
        n = 0

        def transform(x):
            nonlocal n
            n += len(x)
            return x
        return transform

    model = _cnn()
    t = counting()
    first = _run(model, tmp_path / "c", transform=t, budget=100, batch_size=50)
    again = _run(model, tmp_path / "c", transform=t, budget=100, batch_size=50)    # t has run: n is not 0
    assert np.array_equal(again.trace, first.trace)
    path = tmp_path / "c" / "identity.json"
    ident = json.loads(path.read_text())
    for key in ("structure", "transform"):                                  # as the version before the marks
        del ident["objective"][key]
    path.write_text(json.dumps(ident))
    assert np.array_equal(_run(model, tmp_path / "c", transform=counting(), budget=100, batch_size=50).trace,
                          first.trace)


def _interrupting(at: tuple[int, ...]):
    """A transform that sends this process SIGINT when the images seen so far reach a count in ``at``.

    Its trigger is a list (state, marked by its type only in the run's identity), so a later call with
    ``_interrupting(())`` has the same transform fingerprint and resumes the folder without interrupting.
    """
    seen, marks = [0], list(at)

    def transform(x):
        seen[0] += len(x)
        if seen[0] in marks:
            # only with mango's handler in place: the default one would stop the test session itself
            assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
            os.kill(os.getpid(), signal.SIGINT)
        return x
    return transform


def test_ctrl_c_returns_the_partial_result_and_the_same_call_resumes(tmp_path, capsys):
    model = _cnn()
    whole = _run(model, budget=200)
    part = _run(model, tmp_path / "run", budget=200, batch_size=50, eval_batch_size=10,
                transform=_interrupting((60,)))
    err = capsys.readouterr().err
    assert part.interrupted and part.n_queries == 100                     # the batch in progress was finished
    assert "interrupted after 100 of 200 queries" in err and "call mango.maximize again with the same arguments" in err
    assert np.array_equal(part.trace, whole.trace[:100])
    assert "interrupted" in repr(part)
    assert finished_result(tmp_path / "run") is None                      # the folder is not a finished run
    done = _run(model, tmp_path / "run", budget=200, batch_size=50, eval_batch_size=10, transform=_interrupting(()))
    assert not done.interrupted and np.array_equal(done.trace, whole.trace)


def test_a_ctrl_c_in_the_last_batch_leaves_a_whole_run(tmp_path, capsys):
    """The budget is spent by the batch in progress: the run is whole, finished and written as such."""
    res = _run(_cnn(), tmp_path / "run", budget=100, batch_size=50, eval_batch_size=10,
               transform=_interrupting((80,)))
    assert not res.interrupted and res.n_queries == 100
    assert finished_result(tmp_path / "run") is not None


def test_a_saved_partial_result_says_interrupted(tmp_path):
    part = _run(_cnn(), budget=200, batch_size=50, eval_batch_size=10, transform=_interrupting((60,)))
    part.save(tmp_path / "saved")
    res = json.loads((tmp_path / "saved" / "result.json").read_text())
    assert res["status"] == "interrupted" and res["interrupted"] is True and res["n_queries"] == 100
    assert finished_result(tmp_path / "saved") is None


def test_a_second_ctrl_c_stops_at_once(capsys):
    with pytest.raises(KeyboardInterrupt):
        _run(_cnn(), budget=200, batch_size=50, eval_batch_size=10, transform=_interrupting((60, 70)))
    err = capsys.readouterr().err
    assert "interrupted after 50 of 200 queries" in err and "no run_dir" in err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is given back


def test_the_best_image_is_ready_to_show(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    res = _run(_cnn())
    img = res.image
    assert img.dtype == np.uint8 and img.shape == (16, 16)                # plt.imshow takes it as it is
    expect = np.clip(res.best_image[0].numpy() * 255 + 0.5, 0, 255).astype(np.uint8)
    assert np.array_equal(img, expect)
    ax = res.show()
    assert ax.images and np.array_equal(np.asarray(ax.images[0].get_array()), img)
    html = res._repr_html_()
    assert html.count('src="data:image/png;base64,') == 1 and "best score" in html
    assert "n_queries" in dir(res) and "show" in dir(res)
    with pytest.raises(AttributeError, match="Visualization has no attribute 'shw'"):
        res.shw()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_rerun_cell_reuses_its_live_view_port(tmp_path):
    from mango.watch import stop

    port = _free_port()
    first = _run(_cnn(), tmp_path / "a", watch=str(port))
    second = _run(_cnn(), tmp_path / "b", watch=str(port))               # was: "Address already in use"
    try:
        assert first.url == second.url == f"http://127.0.0.1:{port}/"
        state = json.loads(urllib.request.urlopen(second.url + "api/state", timeout=10).read().decode())
        assert state["folder"] == str((tmp_path / "b").resolve())         # the open page follows the new run
    finally:
        stop(second.url)


def test_the_embedded_models_are_one_attribute_away():
    """``mango.registry`` needs no import of its own, and a registered target's name (or the target
    itself) given as the model names where its torch module is."""
    assert isinstance(mango.registry.create("target", "cnn-digits").model, nn.Module)
    with pytest.raises(ConfigError, match=r"registered target: its torch module is mango\.registry\.create"):
        mango.maximize("cnn-digits", "output:3", generator="vqvae-digits", budget=10)
    with pytest.raises(ConfigError, match=r"got SpikingTarget \(this one holds its module as \.net\)"):
        mango.maximize(mango.registry.create("target", "snn-digits"), "output:3", generator="vqvae-digits",
                       budget=10)


def test_a_python_file_without_its_function_is_named_as_such(tmp_path):
    """A .py file given as the model was called 'a pickled Python object'."""
    f = tmp_path / "nets.py"
    f.write_text("import torch\n\ndef make_cnn():\n    return torch.nn.Conv2d(1, 2, 3)\n\ndef _helper():\n    pass\n")
    with pytest.raises(ConfigError, match=r"is a Python file: name the function in it that builds the model, "
                                          r"'.*nets\.py:FUNCTION' \(functions defined there: make_cnn\)"):
        mango.maximize(str(f), "output:0", generator="vqvae-digits", budget=10)
    res = mango.maximize(f"{f}:make_cnn", "output:1", generator="vqvae-digits", budget=10)
    assert res.n_queries == 10


@pytest.mark.parametrize("kw, match", [
    ({"transform": lambda x: None}, r"transform returned NoneType for images of shape \[10, 1, 16, 16\]"),
    ({"transform": lambda x: x[:1]}, r"transform returned a tensor of shape \[1, 1, 16, 16\]"),
    ({"eval_batch_size": 10**9}, r"eval_batch_size must be an integer in 1\.\.65536, got 1000000000"),
])
def test_a_bad_transform_or_eval_batch_is_named(kw, match):
    """A transform that returned None ended in 'NoneType has no attribute ndim' inside the target; an
    eval_batch_size of 10**9 in numpy's MemoryError (119 GiB)."""
    with pytest.raises(MangoError if "transform" in kw else ConfigError, match=match):
        _run(_cnn(), budget=20, **kw)


def test_a_rerun_cell_keeps_its_fallback_port_when_the_default_is_taken(tmp_path):
    """With 8765 held by another process, each re-run got a new free port and the open page went dead."""
    from mango.watch import DEFAULT_PORT, stop

    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        holder.bind(("127.0.0.1", DEFAULT_PORT))
    except OSError:
        holder.close()
        pytest.skip(f"port {DEFAULT_PORT} is in use here; the test needs to hold it itself")
    holder.listen()
    try:
        first = _run(_cnn(), tmp_path / "a", watch=True)
        second = _run(_cnn(), tmp_path / "b", watch=True)
        try:
            assert first.url == second.url and f":{DEFAULT_PORT}/" not in second.url
            state = json.loads(urllib.request.urlopen(second.url + "api/state", timeout=10).read().decode())
            assert state["folder"] == str((tmp_path / "b").resolve())
        finally:
            stop(second.url)
    finally:
        holder.close()


def test_a_resumed_call_says_so_and_a_stored_one_draws_no_bar(tmp_path, capsys):
    part = _run(_cnn(), tmp_path / "run", budget=200, batch_size=50, eval_batch_size=10,
                transform=_interrupting((60,)))
    capsys.readouterr()
    _run(_cnn(), tmp_path / "run", budget=200, batch_size=50, eval_batch_size=10, progress=True,
         transform=_interrupting(()))
    err = capsys.readouterr().err
    assert f"resuming the run in {tmp_path / 'run'}: its journal holds {part.n_queries} queries" in err
    _run(_cnn(), tmp_path / "run", budget=200, batch_size=50, eval_batch_size=10, progress=True,
         transform=_interrupting(()))
    err = capsys.readouterr().err
    assert "holds a finished run" in err and "200/200" not in err and "q/s" not in err


def test_a_bad_value_shows_as_one_line_in_a_notebook():
    """IPython renders an exception through its _render_traceback_: a ConfigError (a bad value the user
    gave) is its one line there, as on the command line, not MANGO's stack of checking frames (checked
    in a real ipykernel: one traceback line)."""
    with pytest.raises(ConfigError) as err:
        _run(_cnn(), budget=20, eval_batch_size=0)
    assert err.value._render_traceback_() == [f"ConfigError: {err.value}"]
    assert "eval_batch_size" in str(err.value)


def test_a_result_is_not_saved_into_a_run_folder_or_a_file(tmp_path):
    """res.save into another run's folder mixed the two (its report then showed this result as that run's);
    a file as the folder gave a bare FileExistsError."""
    _run(_cnn(), tmp_path / "run")
    res = _run(_cnn(1))
    with pytest.raises(ConfigError, match=r"is a run folder \(run\.json, journal\.jsonl\)"):
        res.save(tmp_path / "run")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match=r"'.*afile' is a file; it must be a folder"):
        res.save(tmp_path / "afile")
    with pytest.raises(ConfigError, match=r"run_dir '.*afile' is a file"):
        _run(_cnn(), tmp_path / "afile")


def test_a_refused_call_says_nothing_of_resuming_and_serves_no_view(tmp_path, capsys):
    """A call refused for its run folder (other settings; another process's folder) printed "resuming the run
    ... (replayed)", drew a progress bar and started a live view of the folder before the refusal."""
    _run(_cnn(), tmp_path / "run", budget=40)
    capsys.readouterr()
    port = _free_port()
    with pytest.raises(ConfigError, match="another config|other settings|differs"):
        mango.maximize(_cnn(), "2:3", generator="vqvae-digits", optimizer="random", budget=40, seed=1,
                       run_dir=tmp_path / "run", watch=str(port), progress=True)
    err = capsys.readouterr().err
    assert "resuming" not in err and "/40" not in err, err
    with pytest.raises(OSError):                    # nothing listens on the asked port
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=2)
    # an accepted call on the finished folder still says what it returns, and draws no bar
    res = mango.maximize(_cnn(), "2:3", generator="vqvae-digits", optimizer="random", budget=40, seed=0,
                         run_dir=tmp_path / "run", progress=True)
    err = capsys.readouterr().err
    assert res.n_queries == 40 and "holds a finished run of these settings" in err and "/40" not in err
