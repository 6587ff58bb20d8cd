"""The built wheel installs generators/ and targets/ as mango.generators / mango.targets, weights included."""
import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_install(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    b = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                        str(tmp / "dist"), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert b.returncode == 0, b.stderr[-2000:]
    wheels = list((tmp / "dist").glob("mango_am-*.whl"))
    assert len(wheels) == 1
    target = tmp / "site"
    i = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target),
                        str(wheels[0])], capture_output=True, text=True, timeout=300)
    assert i.returncode == 0, i.stderr[-2000:]
    return target


def _probe(target, code):
    # -S: no site module, so the editable install's import hook (a .pth file) is not loaded;
    # the dependencies come from the system site-packages through PYTHONPATH (no .pth processing).
    env = {"PYTHONPATH": f"{target}:{sysconfig.get_paths()['purelib']}", "PATH": "/usr/bin:/bin"}
    p = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env, timeout=300,
                       cwd=str(target))
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_wheel_maps_subpackages_and_ships_weights(wheel_install):
    code = (
        "import json, importlib, importlib.util, mango, mango.generators, mango.targets\n"
        "from importlib import metadata\n"
        "from pathlib import Path\n"
        "gen = Path(mango.generators.__file__).parent\n"
        "tgt = Path(mango.targets.__file__).parent\n"
        "eps = {g: sorted(e.name for e in metadata.entry_points(group='mango.' + g)) for g in "
        "('generators', 'targets', 'optimizers')}\n"
        "print(json.dumps({'mango': mango.__file__, 'gen': str(gen), 'tgt': str(tgt),\n"
        "  'gen_weights': sorted(p.name for p in (gen / 'weights').glob('*')) if (gen / 'weights').exists() else [],\n"
        "  'tgt_weights': sorted(p.name for p in (tgt / 'weights').glob('*')) if (tgt / 'weights').exists() else [],\n"
        "  'top_generators': importlib.util.find_spec('generators') is not None,\n"
        "  'top_targets': importlib.util.find_spec('targets') is not None, 'eps': eps}))\n"
    )
    info = _probe(wheel_install, code)
    assert info["mango"].startswith(str(wheel_install))
    assert info["gen"].startswith(str(wheel_install)) and info["tgt"].startswith(str(wheel_install))
    assert not info["top_generators"] and not info["top_targets"]  # the user's namespace stays clean
    assert "protes" in info["eps"]["optimizers"]
    src_gen = sorted(p.name for p in (ROOT / "generators" / "weights").glob("*")) \
        if (ROOT / "generators" / "weights").exists() else []
    src_tgt = sorted(p.name for p in (ROOT / "targets" / "weights").glob("*")) \
        if (ROOT / "targets" / "weights").exists() else []
    assert info["gen_weights"] == src_gen and info["tgt_weights"] == src_tgt


def test_engine_never_imports_concrete_models():
    import ast

    for path in (ROOT / "mango").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            for n in names:
                assert not n.lstrip(".").startswith(("mango.generators", "mango.targets", "generators", "targets")), \
                    f"{path} imports {n}"
                assert not (node.__class__ is ast.ImportFrom and node.level == 1 and
                            (node.module or "").startswith(("generators", "targets")) and path.parent.name == "mango")
