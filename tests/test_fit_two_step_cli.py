"""python -m launch fit --two-step on the OLMo ladder (Bhagia et al. 2024) and on bad input."""

import json

import pandas as pd
import pytest

from launch.__main__ import main as launch

OLMO = ["--files", "file", "--files-dir", "ladder-runs", "--where", "variant=", "--where",
        "xC!=0.5", "--heldout", "model=3B", "--n", "N", "--d", "throughput/total_tokens",
        "--smooth", "5"]
C4 = "eval/c4_en-validation/CrossEntropyLoss"
OLMO_13B = "13202396160,5e12,13B-5T"  # OLMo 2 13B: non-embedding N, 5T tokens (the paper's)


@pytest.fixture
def manifest(shared_data):
  return str(shared_data("scaling", "olmo_ladder2024", "ladder_runs_manifest.csv"))


def run(argv, capsys):
  code = launch(["fit", "--two-step", *map(str, argv)])
  out = capsys.readouterr()
  return code, out.out, out.err


def test_step1_on_c4_reproduces_the_papers_13b_prediction(manifest, tmp_path, capsys):
  """Bhagia et al.'s step 1 (their src/scripts/step1.py -y c4, the 'final' config: 190M-1.3B at
  1, 2, 5, 10 x Chinchilla, the last 5 evaluations averaged) predicts 2.344 nats for OLMo 2 13B."""
  code, out, _ = run([manifest, *OLMO, "--task-loss", C4, "--target", OLMO_13B, "--bootstrap",
                      "20", "--out", tmp_path / "c4"], capsys)
  assert code == 0, out
  report = json.loads((tmp_path / "c4" / "fit.json").read_text())
  assert report["fit_runs"] == 16 and report["chain"]["link"] is None
  target, *heldout = report["predictions"]
  assert target["label"] == "13B-5T" and abs(target["loss"] / 2.344 - 1) < 0.01, target
  lo, hi = target["loss_interval"]
  assert lo < target["loss"] < hi
  assert report["bootstrap"]["resample"] == "residuals"  # one run per design point
  assert sorted(h["label"] for h in heldout) == [f"3B-{x}xC.csv" for x in (10, 1, 2, 5)]
  assert all(abs(h["loss_relative_error"]) < 0.03 for h in heldout)
  assert (tmp_path / "c4" / "forecast.png").stat().st_size > 1000


def _task_columns(manifest):
  first = pd.read_csv(manifest).file.iloc[0]
  columns = pd.read_csv(manifest.replace("ladder_runs_manifest.csv", f"ladder-runs/{first}"),
                        nrows=1).columns
  bpb = [c for c in columns if c.startswith("eval/downstream_bpb/")]
  pairs = []
  for c in bpb:
    task = c.split("/")[-1].replace("_bpb", "")
    metric = [m for m in columns if m.startswith("eval/downstream/") and task in m]
    pairs.append((c, metric[0]))
  return pairs


def test_the_forecast_runs_for_every_task_column(manifest, capsys):
  pairs = _task_columns(manifest)
  assert len(pairs) == 20  # MMLU x 4 subjects x val, test; 12 more task splits
  for bpb, metric in pairs:
    code, out, err = run([manifest, *OLMO, "--task-loss", bpb, "--metric", metric, "--target",
                          OLMO_13B, "--bootstrap", "5"], capsys)
    assert code == 0, (bpb, out, err)
    assert "step 2" in out and "13B-5T" in out and "3B-10xC.csv" in out


@pytest.mark.parametrize("extra, message", [
    (["--task-loss", "nope"], "no column"),
    (["--task-loss", C4, "--target", "13e9"], "expected N,D"),
    (["--task-loss", C4, "--target", "0,5e12"], "finite and > 0"),
    (["--task-loss", C4, "--chance", "0.9", "--upper", "0.5"], "must be below"),
    (["--task-loss", C4, "--heldout", "model"], "expected COLUMN=VALUE"),
    (["--task-loss", C4, "--heldout", "size=3B"], "no column 'size'"),
    (["--task-loss", C4, "--heldout", "xC!=99"], "nothing is left to fit"),
    (["--task-loss", C4, "--resample", "runs"], "no design point"),
    (["--task-loss", C4, "--smooth", "0"], "must be at least 1"),
    (["--task-loss", C4, "--law", "kaplan"], "invalid choice"),
])
def test_bad_input_is_one_line_and_exit_2(manifest, capsys, extra, message):
  code, out, err = run([manifest, *OLMO, *extra, "--bootstrap", "0"], capsys)
  assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_a_table_of_curves_without_run_ids_is_refused(tmp_path, capsys):
  path = tmp_path / "curves.csv"
  pd.DataFrame(dict(N=[1e6] * 3, D=[1e7, 2e7, 3e7], bpb=[1.0, 0.9, 0.8])).to_csv(path)
  code, _, err = run([path, "--n", "N", "--d", "D", "--task-loss", "bpb"], capsys)
  assert code == 2 and "--run" in err
  code, _, err = run([path, "--n", "N", "--d", "D", "--task-loss", "bpb", "--files", "f"],
                     capsys)
  assert code == 2 and "--files 'f'" in err


def test_two_modes_at_once_are_refused(capsys):
  code = launch(["fit", "--two-step", "--hparams", "t.csv"])
  err = capsys.readouterr().err
  assert code == 2 and "--two-step and --hparams are different fits" in err
