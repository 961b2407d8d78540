"""Fits from whole loss curves (research/scaling/curves.py, `launch fit --curves`): the early cut
is stated and applied, intermediate points of decaying schedules are flagged, sweep folders read."""

import json
import pathlib

import numpy as np
import pandas as pd
import pytest

from launch.__main__ import main as launch
from research.errors import UserError
from research.scaling import curves
from research.scaling.forms import FORMS

THETA = np.array([np.log(400.0), np.log(1500.0), np.log(1.7), 0.34, 0.28])
SMOKE = pathlib.Path(__file__).parent / "data" / "analysis" / "chinchilla-py-smoke"
FAST = ["--keep", "8", "--bootstrap", "0", "--heldout", "0", "--no-plots"]


def curve_table() -> pd.DataFrame:
  """Runs of 4 sizes x 2 schedules, 10 evaluations each; the law holds at every point (so a fit
  to every point recovers it), which lets the test see which points were kept."""
  rows = []
  for n in (1e7, 3e7, 1e8, 3e8):
    for schedule in ("cosine", "constant"):
      final = 20 * n
      for d in np.linspace(0.1, 1.0, 10) * final:
        loss = float(FORMS["hoffmann"].loss(THETA, dict(N=np.array(n), D=np.array(d))))
        rows.append(dict(run=f"{n:.0e}-{schedule}", N=n, D=d, loss=loss, schedule=schedule))
  return pd.DataFrame(rows)


def test_curve_points_cut_early_points_and_flag_decaying_intermediates():
  rows = curve_table()
  points, record = curves.curve_points(rows, run="run", d="D", cut=0.25, schedule="schedule")
  # 0.1 and 0.2 of each run's final D fall below the cut: 2 of 10 per run, 8 runs.
  assert record["dropped_early"] == 16
  # Cosine runs: 8 points above the cut, 7 of them intermediate (flagged), 4 runs.
  assert record["flagged_decaying"] == 28 and not record["flagged_kept"]
  assert record["points"] == 80 - 16 - 28 == len(points)
  cosine = points[points.schedule == "cosine"]
  assert len(cosine) == 4 and np.allclose(cosine.D, 20 * cosine.N)  # only their final points
  kept, record = curves.curve_points(rows, run="run", d="D", cut=0.25, schedule="schedule",
                                     keep_decaying=True)
  assert record["flagged_kept"] and len(kept) == 64
  text = "\n".join(curves.describe(record))
  assert "28 intermediate points" in text and "KEPT" in text
  _, record = curves.curve_points(rows, run="run", d="D")
  assert record["flagged_decaying"] == 0 and "cannot be flagged" in "\n".join(
      curves.describe(record))
  with pytest.raises(UserError, match="curve cut"):
    curves.curve_points(rows, run="run", d="D", cut=1.0)


def test_launch_fit_on_a_csv_of_curves(tmp_path, capsys):
  path = tmp_path / "curves.csv"
  curve_table().to_csv(path, index=False)
  out = tmp_path / "fit"
  code = launch(["fit", str(path), "--n", "N", "--d", "D", "--loss", "loss", "--run", "run",
                 "--curves", "--schedule", "schedule", "--out", str(out), *FAST])
  stdout = capsys.readouterr().out
  assert code == 0, stdout
  # The default cut (0.1) keeps all 10 evaluations (the first is at 0.1 x the final D); the
  # 9 intermediate points of each of the 4 cosine runs are flagged and dropped.
  assert "36 intermediate points" in stdout and "dropped (0)" in stdout
  report = json.loads((out / "fit.json").read_text())
  assert report["curves"]["points"] == report["n_points"] == 44
  params = report["approaches"]["3"]["fit"]["params"]
  assert params["alpha"] == pytest.approx(0.34, rel=1e-3)
  assert params["E"] == pytest.approx(1.7, rel=1e-3)


def test_launch_fit_on_a_sweep_folder(capsys):
  code = launch(["fit", str(SMOKE), "--n", "N", "--d", "D", "--loss", "val_loss", *FAST])
  stdout = capsys.readouterr().out
  assert code == 0, stdout
  assert "14 runs" in stdout  # without --curves: each run's final evaluation
  code = launch(["fit", str(SMOKE), "--n", "N", "--d", "D", "--loss", "val_loss", "--curves",
                 *FAST])
  stdout = capsys.readouterr().out
  assert code == 0, stdout
  table = curves.sweep_curves(str(SMOKE))
  assert set(table.schedule) == {"constant", "wsd"} and len(table) == 19
  assert f"{len(table)} evaluations of 14 runs" in stdout


@pytest.mark.parametrize("extra, message", [
    (["--schedule", "schedule"], "need --curves"),
    (["--curves", "--curve-cut", "1"], "must be in [0, 1)"),
    (["--curves", "--run", "run", "--schedule", "nope"], "'nope'"),
    (["--where", "schedule!"], "expected COLUMN=VALUE"),
])
def test_bad_curve_options_exit_2(tmp_path, capsys, extra, message):
  path = tmp_path / "curves.csv"
  curve_table().to_csv(path, index=False)
  code = launch(["fit", str(path), "--n", "N", "--d", "D", "--loss", "loss", *extra, *FAST])
  err = capsys.readouterr().err
  assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_where_not_equal_and_empty_cells(tmp_path, capsys):
  path = tmp_path / "curves.csv"
  table = curve_table()
  table["note"] = ""
  table.loc[table.schedule == "cosine", "note"] = "x"
  table.to_csv(path, index=False)
  code = launch(["fit", str(path), "--n", "N", "--d", "D", "--loss", "loss", "--where",
                 "schedule!=cosine", "--where", "note=", *FAST])
  assert code == 0 and "40 runs" in capsys.readouterr().out
