"""search.sweep owns a sweep's folder: no other module names its files, it imports light, and sweeps that an earlier
version wrote (other column names) still open."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from search.outcome import CONFIRM_FOLDS, CONFIRM_MEAN, CONFIRM_STD
from search.sweep import Sweep, UsageError, ranked
from tests.conftest import ROOT
from trainable.metrics import SCORE

# A sweep's file names, and the trial folder's prefix as code spells it (a path, a glob, an f-string).
NAMES = re.compile(r"leaderboard\.csv|sweep\.json|space\.yaml|confirm\.csv|jobs\.json|\btrial_(\{|\*|\")")


def test_only_the_sweep_module_names_a_sweeps_files():
    found = []
    for folder in ("search", "trainable", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == ROOT / "search" / "sweep.py":
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if NAMES.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "\n".join(found)
    assert NAMES.search((ROOT / "search" / "sweep.py").read_text())  # the pattern does find them where they are


def test_the_sweep_module_imports_neither_torch_nor_ray():
    code = "import sys, search.sweep; print(sorted({m.split('.')[0] for m in sys.modules}))"
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    loaded = set(json.loads(p.stdout.replace("'", '"')))
    assert "search" in loaded and not loaded & {"torch", "detectron2", "ray", "mlflow", "pandas"}


def test_a_sweep_of_the_previous_layout_opens_under_todays_names(tmp_path):
    """Leaderboards and confirmation rankings written before one name per figure (best_val_map50, mean_val_map50,
    std_val_map50, folds_scored) read back under today's names; the winner is the same trial."""
    folder = tmp_path / "old"
    (folder / "confirm" / "trial_x1").mkdir(parents=True)
    (folder / "space.yaml").write_text("name: old\n")
    (folder / "sweep.json").write_text(json.dumps({"settings": {"data": str(tmp_path)}, "overrides": {}}))
    board = "trial_id,trial,status,best_val_map50\naaa,1,finished,0.3\nbbb,2,finished,0.2\nccc,3,error,\n"
    (folder / "leaderboard.csv").write_text(board)
    sweep = Sweep.open(tmp_path, "old")
    read = sweep.board()
    assert SCORE in read and "best_val_map50" not in read
    assert list(ranked(read)["trial_id"]) == ["aaa", "bbb"]  # the scored trials, best first
    assert sweep.winner(read)[0]["trial_id"] == "aaa"

    (folder / "confirm" / "jobs.json").write_text(json.dumps([{"trial_id": "aaa"}, {"trial_id": "bbb"}]))
    ranking = "trial,trial_id,mean_val_map50,std_val_map50,folds_scored\n2,bbb,0.25,0.01,2\n1,aaa,0.2,0.02,2\n"
    (folder / "confirm" / "confirm.csv").write_text(ranking)
    read = sweep.board()
    means = read.set_index("trial_id")[CONFIRM_MEAN]
    assert means[["aaa", "bbb"]].tolist() == [0.2, 0.25] and pd.isna(means["ccc"])
    assert {CONFIRM_STD, CONFIRM_FOLDS} <= set(read.columns)
    row, why, trial_dir = sweep.winner(read)
    assert row["trial_id"] == "bbb" and "confirmed winner" in why and Path(trial_dir) == folder / "trial_bbb"

    with pytest.raises(UsageError, match="not a sweep folder"):
        Sweep(tmp_path / "nothing").space()
    pd.DataFrame({"x": [1]}).to_csv(folder / "leaderboard.csv", index=False)
    with pytest.raises(UsageError, match=r"leaderboard\.csv: unreadable \(no columns trial_id, status, val_map50_best"):
        sweep.board()
