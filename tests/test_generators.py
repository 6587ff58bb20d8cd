"""Generators (issue #3): VQ-VAE, SN-GAN, pixel / Fourier, weights loading, registry, display."""
from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mango import registry
from mango.errors import ConfigError, MangoError
from mango.spaces import CodebookSpace, GridSpace

# measured 0.0031 on the 360 held-out digits with the embedded weights (see generators/weights/README.md)
DIGITS_TEST_MSE_MAX = 0.006


@pytest.fixture(scope="module")
def vq_digits():
    return registry.create("generator", "vqvae-digits")


@pytest.fixture(scope="module")
def sngan():
    return registry.create("generator", "sngan-digits")


@pytest.fixture(scope="module")
def digits_test():
    from mango.data import digits

    return digits("test")[0]


# -- registry and protocol ----------------------------------------------------
def test_registry_names_all_generators():
    assert {"vqvae-digits", "vqvae-cifar10", "sngan-digits", "pixel", "fourier"} <= set(registry.names("generator"))


@pytest.mark.parametrize("name", ["vqvae-digits", "sngan-digits", "pixel", "fourier"])
def test_default_generators_meet_protocol_and_digits_format(name):
    g = registry.create("generator", name)
    assert g.differentiable is True and not g.training
    I = g.space.sample(np.random.default_rng(0), 5)
    z = g.space.decode(I)
    with torch.no_grad():
        x = g(z)
    assert x.shape == (5, 1, 16, 16) and x.dtype == torch.float32
    assert g.value_range == (0.0, 1.0)
    assert x.min() >= 0.0 and x.max() <= 1.0
    u = g.to_uint8(x)
    assert u.dtype == np.uint8 and u.shape == (5, 16, 16, 1)


def test_import_does_no_work():
    code = ("import sys, mango.generators as g; "
            "assert not any(m in sys.modules for m in ('mango.generators.vqvae', 'mango.generators.sngan', "
            "'mango.generators.factories')), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- VQ-VAE on digits -----------------------------------------------------------
def test_vqvae_digits_space(vq_digits):
    s = vq_digits.space
    assert isinstance(s, CodebookSpace) and (s.d, s.n, s.shape) == (16, 32, (4, 4))
    z = s.decode(np.arange(16)[None] % 32)
    assert z.dtype == torch.int64 and z.shape == (1, 4, 4)
    s.qtt()  # n is a power of two


def test_vqvae_digits_reconstructs_held_out_digits(vq_digits, digits_test):
    codes = vq_digits.encode(digits_test)
    assert codes.dtype == np.int64 and codes.shape == (len(digits_test), 16)
    with torch.no_grad():
        rec = vq_digits(vq_digits.space.decode(codes))
    mse = float(((rec - digits_test) ** 2).mean())
    assert mse < DIGITS_TEST_MSE_MAX, mse
    # a reconstruction is much closer to its own original than to another digit
    other = float(((rec - digits_test.roll(1, 0)) ** 2).mean())
    assert other > 5 * mse
    assert len(np.unique(codes)) >= 24  # the codebook is in use


def test_vqvae_encode_decode_roundtrip(vq_digits, digits_test):
    """Codes of real digits survive decode -> encode at most positions (measured 0.90)."""
    I = vq_digits.encode(digits_test[:64])
    with torch.no_grad():
        x = vq_digits(vq_digits.space.decode(I))
    assert (vq_digits.encode(x) == I).mean() > 0.75


def test_vqvae_decode_soft_matches_hard_and_has_gradient(vq_digits):
    I = vq_digits.space.sample(np.random.default_rng(2), 3)
    z = vq_digits.space.decode(I)
    p = torch.nn.functional.one_hot(z, 32).float()
    with torch.no_grad():
        assert torch.allclose(vq_digits.decode_soft(p), vq_digits(z), atol=1e-5)
    logits = torch.zeros(3, 4, 4, 32, requires_grad=True)
    img = vq_digits.decode_soft(torch.softmax(logits, -1))
    img.mean().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    with pytest.raises(ConfigError):
        vq_digits.decode_soft(torch.ones(1, 4, 4, 7) / 7)



def test_vqvae_code_vectors_are_what_each_value_decodes_from(vq_digits):
    V = vq_digits.code_vectors()
    assert V.ndim == 2 and V.shape[0] == vq_digits.space.n and V.dtype == np.float32
    I = vq_digits.space.sample(np.random.default_rng(3), 2)
    z = vq_digits.space.decode(I)                                   # [2, 4, 4] values
    e = torch.from_numpy(V)[z].permute(0, 3, 1, 2)                  # [2, D, 4, 4] their vectors
    with torch.no_grad():
        assert torch.allclose(vq_digits.decode_latent(e), vq_digits(z), atol=1e-6)
    assert not np.shares_memory(V, vq_digits._vq_vae.codebook.detach().numpy())   # a copy


# -- the paper's CIFAR-10 checkpoint --------------------------------------------
def test_paper_vqvae_loads_and_reencodes(paper_weights, monkeypatch):
    calls = []
    real_load = torch.load

    def spy(*a, **kw):
        calls.append(kw)
        return real_load(*a, **kw)

    monkeypatch.setattr(torch, "load", spy)
    g = registry.create("generator", "vqvae-cifar10", {"weights": str(paper_weights / "vqvae_cifar10.pt")})
    assert calls and all(kw.get("weights_only") is True for kw in calls)
    s = g.space
    assert isinstance(s, CodebookSpace) and (s.d, s.n, s.shape) == (64, 512, (8, 8))

    from mango.data import CIFAR10_MEAN, CIFAR10_STD
    from mango.data import photo_crops

    x = photo_crops(4, size=32, seed=3)  # known images in [0, 1]
    m = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    sd = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    xn = (x - m) / sd
    codes = g.encode(xn)
    assert codes.shape == (4, 64) and codes.dtype == np.int64 and codes.min() >= 0 and codes.max() < 512
    with torch.no_grad():
        y = g(s.decode(codes))
    assert y.shape == (4, 3, 32, 32)
    lo, hi = g.value_range
    assert lo < -1.9 and hi > 2.1  # normalised space
    assert y.min() > lo - 1.0 and y.max() < hi + 1.0
    assert float(((y - xn) ** 2).mean()) < 0.1  # a reconstruction of the photo (measured 0.02)
    assert (g.encode(y) == codes).mean() > 0.8  # measured 0.99
    u = g.to_uint8(y)
    assert u.shape == (4, 32, 32, 3)
    # to_uint8 undoes the CIFAR normalisation
    assert np.abs(u.astype(float) / 255 - x.permute(0, 2, 3, 1).numpy()).mean() < 0.06


def test_paper_vqvae_relu_skip_quirk(paper_weights):
    """Decoding with the plain x + block(x) skip gives visibly different images (README note)."""
    from mango.generators.vqvae import _Residual, load_paper_vqvae

    g = load_paper_vqvae(paper_weights / "vqvae_cifar10.pt")
    z = g.space.decode(g.space.sample(np.random.default_rng(0), 2))
    with torch.no_grad():
        good = g(z)
        orig = _Residual.forward
        try:
            _Residual.forward = lambda self, x: x + self._block[3](torch.relu(self._block[1](torch.relu(x))))
            plain = g(z)
        finally:
            _Residual.forward = orig
    assert (good - plain).abs().max() > 0.1


# -- bad weight files -------------------------------------------------------------
def _err(fn) -> ConfigError:
    with pytest.raises(ConfigError) as ei:
        fn()
    assert isinstance(ei.value, MangoError)
    return ei.value


def test_missing_weights_file_is_a_config_error(tmp_path):
    bad = tmp_path / "nope.pt"
    e = _err(lambda: registry.create("generator", "vqvae-cifar10", {"weights": str(bad)}))
    assert str(bad) in str(e) and "does not exist" in str(e)


def test_corrupted_weights_file_is_a_config_error(tmp_path):
    from mango.generators.common import weights_dir

    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a torch file" * 100)
    e = _err(lambda: registry.create("generator", "vqvae-cifar10", {"weights": str(junk)}))
    assert str(junk) in str(e)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((weights_dir() / "vqvae_digits.pt").read_bytes()[:20000])
    e = _err(lambda: registry.create("generator", "vqvae-digits", {"weights": str(truncated)}))
    assert str(truncated) in str(e) and "could not be" in str(e)


def test_unsafe_pickle_is_refused(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"model": _NotATensor()}, evil)
    e = _err(lambda: registry.create("generator", "vqvae-cifar10", {"weights": str(evil)}))
    assert str(evil) in str(e) and "weights_only" in str(e)


class _NotATensor:
    pass


def test_wrong_network_is_a_config_error(tmp_path):
    from mango.generators.common import weights_dir

    digits_file = weights_dir() / "vqvae_digits.pt"
    # a MANGO checkpoint is not the paper's raw state_dict
    e = _err(lambda: registry.create("generator", "vqvae-cifar10", {"weights": str(digits_file)}))
    assert str(digits_file) in str(e) and "not a state_dict of VQVAE" in str(e)
    # right keys, wrong shapes
    from mango.generators.vqvae import VQVAE, load_paper_vqvae

    small = tmp_path / "small.pt"
    torch.save(VQVAE(hidden=16, res_hidden=8, embedding_dim=8, n_embeddings=16).state_dict(), small)
    e = _err(lambda: load_paper_vqvae(small))
    assert str(small) in str(e) and "wrong shape" in str(e) and "_encoder._conv_1.weight" in str(e)
    # the SN-GAN loader rejects a VQ-VAE checkpoint
    e = _err(lambda: registry.create("generator", "sngan-digits", {"weights": str(small)}))
    assert str(small) in str(e)


# -- SN-GAN ----------------------------------------------------------------------
def test_sngan_space_and_samples(sngan):
    s = sngan.space
    assert isinstance(s, GridSpace) and s.levels == "normal" and s.n == 16 and s.d == 32
    I = s.sample(np.random.default_rng(0), 8)
    z = s.decode(I)
    assert z.shape == (8, 32) and z.dtype == torch.float32
    assert np.allclose(np.sort(np.unique(z.numpy())), np.sort(np.unique(s.values[I])))
    with torch.no_grad():
        x = sngan(z)
    assert x.shape == (8, 1, 16, 16) and x.min() >= 0 and x.max() <= 1
    # samples differ across latents, and are not blank
    d = (x[:, None] - x[None]).abs().mean(dim=(2, 3, 4))
    assert d[~torch.eye(8, dtype=torch.bool)].min() > 0.02
    assert x.std(dim=(1, 2, 3)).min() > 0.1
    # eval mode: an image does not depend on the rest of its batch
    with torch.no_grad():
        assert torch.allclose(sngan(z[:1]), x[:1], atol=1e-5)


def test_sngan_is_differentiable_in_real_latents(sngan):
    z = torch.randn(2, 32, requires_grad=True)
    sngan(z).mean().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_sngan_architecture_default_is_paper_size():
    from mango.generators.sngan import SNDiscriminator, SNGANGenerator

    g = SNGANGenerator(levels=8)
    assert g.space.d == 128 and g.space.n == 8
    with torch.no_grad():
        assert g(g.space.decode(g.space.sample(np.random.default_rng(0), 2))).shape == (2, 3, 32, 32)
        assert SNDiscriminator(ch=16)(torch.rand(2, 3, 32, 32)).shape == (2,)


# -- pixel and Fourier -------------------------------------------------------------
def test_pixel_space_decodes_to_levels_and_upsamples():
    g = registry.create("generator", "pixel")
    s = g.space
    assert isinstance(s, GridSpace) and s.levels == "uniform" and (s.d, s.n, s.shape) == (64, 16, (1, 8, 8))
    assert np.isclose(s.values[0], 0.0) and np.isclose(s.values[-1], 1.0)
    I = np.full((1, 64), 5)
    with torch.no_grad():
        x = g(s.decode(I))
    assert torch.allclose(x, torch.full((1, 1, 16, 16), float(s.values[5])))
    I = np.zeros((1, 64), dtype=np.int64)
    I[0, 0] = 15  # top-left latent pixel bright
    with torch.no_grad():
        x = g(s.decode(I))
    assert x[0, 0, 0, 0] > 0.9 and x[0, 0, -1, -1] == 0
    g3 = registry.create("generator", "pixel", {"channels": 3, "latent_size": 4, "size": 32, "mode": "nearest"})
    with torch.no_grad():
        assert g3(g3.space.decode(g3.space.sample(np.random.default_rng(0), 2))).shape == (2, 3, 32, 32)
    z = torch.full((1, 1, 8, 8), 0.5, requires_grad=True)
    g(z).sum().backward()
    assert z.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="bilinear"):
        registry.create("generator", "pixel", {"mode": "cubic"})


def test_fourier_parametrisation():
    g = registry.create("generator", "fourier")
    s = g.space
    assert isinstance(s, GridSpace) and s.shape == (1, 16, 9, 2) and s.d == 288
    I = s.sample(np.random.default_rng(0), 16)
    with torch.no_grad():
        x = g(s.decode(I))
    assert x.shape == (16, 1, 16, 16) and x.min() > 0 and x.max() < 1
    sd = float(x.std(dim=(1, 2, 3)).mean())
    assert 0.08 < sd < 0.35  # contrast, not saturated
    # the middle level everywhere is a flat grey image
    with torch.no_grad():
        flat = g(torch.zeros(1, *s.shape))
    assert torch.allclose(flat, torch.full_like(flat, 0.5))
    # low frequencies dominate (1/f spectrum): neighbouring pixels are correlated
    assert float(((x[..., 1:] - x[..., :-1]) ** 2).mean()) < float(x.var(dim=(2, 3)).mean())
    z = torch.randn(2, *s.shape, requires_grad=True)
    g(z).sum().backward()
    assert z.grad.abs().sum() > 0
    g3 = registry.create("generator", "fourier", {"channels": 3, "size": 32})
    with torch.no_grad():
        y = g3(torch.randn(2, *g3.space.shape))
    assert y.shape == (2, 3, 32, 32)
    # decorrelated colour: channels are correlated in RGB
    c = np.corrcoef(y[0].reshape(3, -1).numpy())
    assert c[0, 1] > 0.5


# -- display and wrap ----------------------------------------------------------------
def test_to_uint8_value_range_and_normalisation():
    from mango.generators import to_uint8
    from mango.data import CIFAR10_MEAN, CIFAR10_STD

    x = torch.tensor([[[[-1.0, 0.0, 1.0, 2.0]]]])
    assert to_uint8(x, (-1.0, 1.0)).reshape(-1).tolist() == [0, 128, 255, 255]
    img = torch.rand(2, 3, 4, 4)
    m = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    s = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    u = to_uint8((img - m) / s, mean=CIFAR10_MEAN, std=CIFAR10_STD)
    assert u.shape == (2, 4, 4, 3)
    assert np.abs(u.astype(int) - np.round(img.permute(0, 2, 3, 1).numpy() * 255)).max() <= 1
    with pytest.raises(ConfigError):
        to_uint8(torch.zeros(2, 2))


def test_wrap_and_register_user_module():
    from mango.generators import wrap
    from mango.objective import Objective

    net = torch.nn.Sequential(torch.nn.Linear(8, 36), torch.nn.Unflatten(1, (1, 6, 6)), torch.nn.Tanh())
    space = GridSpace(d=8, n=4)
    g = wrap(net, space, value_range=(-1, 1), name="tiny")
    assert g.space is space and g.value_range == (-1.0, 1.0) and g.differentiable
    with torch.no_grad():
        assert g(space.decode([[0, 1, 2, 3, 0, 1, 2, 3]])).shape == (1, 1, 6, 6)
    assert g.to_uint8(torch.full((1, 1, 2, 2), -1.0)).max() == 0
    registry.register("generator", "test-tiny", lambda device="cpu": wrap(net, space, name="tiny"), overwrite=True)
    g2 = registry.create("generator", "test-tiny")
    obj = Objective(g2, lambda x: x.mean(dim=(1, 2, 3)))
    assert obj(np.zeros((3, 8), dtype=np.int64)).shape == (3,)
    with pytest.raises(ConfigError):
        wrap(net, "not a space")


# -- CIFAR-10 readers (no download) ---------------------------------------------------
def test_cifar10_readers(tmp_path):
    from mango.data import cifar10

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in [("data_batch_1", 6), ("data_batch_2", 4), ("test_batch", 3)]:
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         b"labels": list(range(n))}, f)
    x, y = cifar10(tmp_path, "train")
    assert x.shape == (10, 3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert y.tolist() == list(range(6)) + list(range(4))
    assert cifar10(folder, "test")[0].shape == (3, 3, 32, 32)

    import imageio.v3 as iio

    tree = tmp_path / "png"
    for split in ("train", "test"):
        for cls in ("cat", "airplane"):
            (tree / split / cls).mkdir(parents=True)
            for i in range(2):
                iio.imwrite(tree / split / cls / f"{i}.png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    x, y = cifar10(tree, "train")
    assert x.shape == (4, 3, 32, 32) and sorted(y.tolist()) == [0, 0, 1, 1]
    with pytest.raises(FileNotFoundError, match="no CIFAR-10"):
        cifar10(tmp_path / "nothing")


# -- training recipes (smoke) -----------------------------------------------------------
def test_training_recipes_run_and_reload(tmp_path):
    from mango.generators import load_sngan, load_vqvae
    from mango.generators.train_sngan import main as train_sngan
    from mango.generators.train_vqvae import main as train_vqvae

    rec = train_vqvae(["--steps", "5", "--hidden", "16", "--embedding-dim", "4", "--codebook", "8",
                       "--out", str(tmp_path / "vq.pt")])
    assert rec["steps"] == 5 and (tmp_path / "vq.png").is_file() and (tmp_path / "vq.json").is_file()
    g = load_vqvae(tmp_path / "vq.pt")
    assert g.space.n == 8 and g.space.shape == (4, 4)
    rec = train_sngan(["--steps", "3", "--ch", "8", "--z-dim", "6", "--batch", "8", "--out", str(tmp_path / "sn.pt")])
    assert (tmp_path / "sn.png").is_file() and "d_hinge" in rec["final_loss_last100"]
    g = load_sngan(tmp_path / "sn.pt", levels=4)
    assert g.space.d == 6 and g.space.n == 4


def test_committed_weights_are_small():
    from mango.generators.common import weights_dir

    total = sum(p.stat().st_size for p in Path(weights_dir()).iterdir() if p.is_file())
    assert total < 5 * 1024 * 1024


def _fake_cifar(tmp_path):
    """A tiny CIFAR-10 on disk in both layouts the loader reads (nothing is downloaded)."""
    import pickle

    import imageio.v3 as iio

    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
    tree = tmp_path / "cifar_png" / "train"
    for i, img in enumerate(imgs):
        cls = tree / ("cat" if i % 2 else "airplane")
        cls.mkdir(parents=True, exist_ok=True)
        iio.imwrite(cls / f"{i}.png", img)
    (tmp_path / "cifar_png" / "test" / "cat").mkdir(parents=True)
    iio.imwrite(tmp_path / "cifar_png" / "test" / "cat" / "t.png", imgs[0])
    pk = tmp_path / "cifar-10-batches-py"
    pk.mkdir()
    with open(pk / "data_batch_1", "wb") as f:
        pickle.dump({b"data": imgs.transpose(0, 3, 1, 2).reshape(6, -1), b"labels": [3, 1, 4, 1, 5, 9]}, f)
    return imgs, tmp_path / "cifar_png", tmp_path


def test_cifar10_loader_reads_both_layouts(tmp_path):
    from mango.data import cifar10

    imgs, tree, root = _fake_cifar(tmp_path)
    x, y = cifar10(root)                                  # finds cifar-10-batches-py inside root
    assert x.shape == (6, 3, 32, 32) and y.tolist() == [3, 1, 4, 1, 5, 9]
    assert torch.equal((x * 255).round().to(torch.uint8), torch.from_numpy(imgs.transpose(0, 3, 1, 2)))
    x, y = cifar10(tree, "train")
    assert x.shape == (6, 3, 32, 32) and sorted(y.tolist()) == [0, 0, 0, 1, 1, 1]   # airplane=0, cat=1
    assert cifar10(tree, "all")[0].shape[0] == 7 and cifar10(tree, "train", limit=2)[0].shape[0] == 2
    with pytest.raises(FileNotFoundError, match="no CIFAR-10 found"):
        cifar10(tmp_path / "nowhere")


def test_recipes_on_cifar10_folder_and_photos(tmp_path):
    """The CIFAR-10 (user's folder) and scikit-image photo recipes train, save, draw and reload."""
    from mango.generators import load_sngan, load_vqvae
    from mango.generators.train_sngan import main as train_sngan
    from mango.generators.train_vqvae import main as train_vqvae

    _, tree, root = _fake_cifar(tmp_path)
    small = ["--steps", "2", "--hidden", "16", "--res-hidden", "8", "--embedding-dim", "4", "--codebook", "8",
             "--batch", "4"]
    # pickle batches without a test_batch: the recipe holds out part of train (6 images here)
    rec = train_vqvae(["--data", "cifar10", "--cifar-root", str(root), *small, "--out", str(tmp_path / "c.pt")])
    assert rec["steps"] == 2 and (tmp_path / "c.png").is_file()
    g = load_vqvae(tmp_path / "c.pt")
    assert g.space.shape == (8, 8) and g.space.n == 8       # 32 x 32 RGB -> 8 x 8 codes, like the paper's
    assert g(g.space.decode(np.zeros((2, 64), dtype=np.int64))).shape == (2, 3, 32, 32)
    train_vqvae(["--data", "photos", "--n-photos", "16", *small, "--out", str(tmp_path / "p.pt")])
    assert load_vqvae(tmp_path / "p.pt").space.shape == (8, 8) and (tmp_path / "p.png").is_file()
    train_sngan(["--data", "cifar10", "--cifar-root", str(tree), "--steps", "2", "--ch", "8", "--z-dim", "6", "--batch", "4",
                 "--out", str(tmp_path / "s.pt")])
    s = load_sngan(tmp_path / "s.pt", levels=4)
    assert s(s.space.decode(np.zeros((2, 6), dtype=np.int64))).shape == (2, 3, 32, 32)


def test_the_gan_refuses_grid_indices_given_as_latents():
    """gen(best_code) on the SN-GAN treated the level indices 0..15 as latent values and drew another image
    without a word (a VQ-VAE takes its codes directly, so analysis code moved between them broke silently)."""
    import torch

    from mango import registry

    g = registry.create("generator", "sngan-digits", {})
    code = [[3] * g.space.d]
    with pytest.raises(TypeError, match=r"takes float latents .*gen\(gen.space.decode\(code\)\)"):
        g(torch.tensor(code))
    assert g(g.space.decode(code)).shape == (1, *g.image_shape)


def test_gan_levels_and_a_vqvae_file_as_gan_weights_are_refused_by_name():
    """levels=0 said "space levels n must be >= 2" without naming the parameter; a VQ-VAE checkpoint given as
    the GAN's weights ended in KeyError: 'z_dim'."""
    from mango import registry
    from mango.errors import ConfigError
    from mango.generators.common import weights_dir

    with pytest.raises(ConfigError, match=r"generator parameter levels .* integer >= 2, got 0"):
        registry.create("generator", "sngan-digits", {"levels": 0})
    with pytest.raises(ConfigError, match=r"not a MANGO SN-GAN checkpoint: its model config has no z_dim"):
        registry.create("generator", "sngan-digits", {"weights": str(weights_dir() / "vqvae_digits.pt")})
