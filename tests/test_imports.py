"""The drivers (run, confirm, export, ui) check their input before any expensive import: neither torch nor
Detectron2 loads until a trial trains or a model predicts, so a bad flag answers in a second, not in eight."""

import ast
import subprocess
import sys

from tests.conftest import ROOT

DRIVERS = ("search.run", "search.confirm", "search.export", "search.ui", "search.leaderboard", "trainable.settings")


def test_the_drivers_import_neither_torch_nor_detectron2():
    code = f"import sys\nfor m in {DRIVERS!r}: __import__(m)\nprint(sorted({{m.split('.')[0] for m in sys.modules}}))"
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    loaded = ast.literal_eval(p.stdout)
    assert "search" in loaded and "trainable" in loaded  # the check sees the drivers' imports
    assert "torch" not in loaded and "detectron2" not in loaded and "torchvision" not in loaded
