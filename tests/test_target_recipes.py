"""The digits training recipes run, write a loadable state dict and a record, and learn."""
import json

from mango.targets import digits as dg
from mango.targets import train_cnn, train_snn


def test_cnn_recipe_learns_and_reloads(tmp_path):
    meta = train_cnn.main(["--epochs", "3", "--out", str(tmp_path)])
    rec = json.loads((tmp_path / dg.CNN_FILE.replace(".pt", ".json")).read_text())
    assert rec["test_accuracy"] == meta["test_accuracy"] > 0.8  # chance is 0.1
    assert rec["seed"] == 0 and rec["command"].startswith("python -m mango.targets.train_cnn")
    t = dg.cnn_digits(weights=str(tmp_path / dg.CNN_FILE))
    assert t is not None


def test_snn_recipe_learns_and_reloads(tmp_path):
    meta = train_snn.main(["--epochs", "3", "--T", "8", "--out", str(tmp_path)])
    assert meta["test_accuracy"] > 0.5 and meta["T"] == 8  # chance is 0.1; 0.79 measured
    dg.snn_digits(weights=str(tmp_path / dg.SNN_FILE), T=8)
