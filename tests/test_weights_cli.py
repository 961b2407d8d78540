"""python -m launch weights: its two subcommands, and bad input as UserError or exit code 2."""

import json

import numpy as np
import pytest

from launch import __main__ as launch_main
from launch import weights
from research.errors import UserError
from research.models import digits
from research.models import inception


def test_export_inception_of_a_missing_file_is_a_user_error(tmp_path):
  out = tmp_path / "out.npz"
  with pytest.raises(UserError, match="missing.pth' does not exist"):
    weights.main(["export-inception", str(tmp_path / "missing.pth"), str(out)])
  assert not out.exists()


def test_export_inception_refuses_another_network(tmp_path):
  np.savez(tmp_path / "resnet.npz", **{"conv1.weight": np.zeros((64, 3, 7, 7))})
  with pytest.raises(UserError, match="not pytorch-fid's FID InceptionV3"):
    weights.main(["export-inception", str(tmp_path / "resnet.npz"), str(tmp_path / "out.npz")])


def test_export_inception_calls_the_library_and_says_what_it_wrote(monkeypatch, capsys):
  calls = []
  monkeypatch.setattr(inception, "export_npz", lambda pth, npz: calls.append((pth, npz)))
  assert weights.main(["export-inception", "in.pth", "out.npz"]) == 0
  assert calls == [("in.pth", "out.npz")]
  assert capsys.readouterr().out == "wrote out.npz\n"


@pytest.mark.parametrize("argv", [[], ["export"], ["export-inception", "in.pth"],
                                  ["train-digits", "a", "b"]])
def test_bad_command_lines_exit_2_in_one_line(argv, capsys):
  from launch.__main__ import main
  assert main(["weights", *argv]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: python -m launch weights") and len(err.splitlines()) == 1, err
  assert "--help" in err


def test_train_digits_of_a_missing_mnist_folder_is_a_user_error(tmp_path, monkeypatch):
  monkeypatch.setattr(digits, "WEIGHTS", str(tmp_path / "digits_mlp.npz"))
  with pytest.raises(UserError, match="does not exist"):
    weights.main(["train-digits", str(tmp_path / "nowhere")])
  assert not (tmp_path / "digits_mlp.npz").exists()


def test_train_digits_writes_the_weights_and_the_record(tmp_path, monkeypatch, capsys):
  params = {"hidden": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}}
  folders = []

  def train(mnist_dir):
    folders.append(mnist_dir)
    return params, {"mnist": 0.5}, {"seed": 0}

  monkeypatch.setattr(digits, "train", train)
  monkeypatch.setattr(digits, "WEIGHTS", str(tmp_path / "digits_mlp.npz"))
  assert weights.main(["train-digits"]) == 0
  assert folders == [digits.DEFAULT_MNIST]
  np.testing.assert_array_equal(digits.load_params(digits.WEIGHTS)["hidden"]["kernel"],
                                params["hidden"]["kernel"])
  with open(tmp_path / "digits_mlp.json") as f:
    record = json.load(f)
  assert record["command"].startswith("python -m launch weights train-digits")
  assert record["test_accuracy"] == {"mnist": 0.5} and record["seed"] == 0
  assert capsys.readouterr().out.startswith(f"wrote {digits.WEIGHTS}: test accuracy")


def test_through_the_entry_point_bad_input_is_one_line_and_exit_code_2(tmp_path, monkeypatch,
                                                                       capsys):
  monkeypatch.setitem(launch_main.COMMANDS, "weights", ("launch.weights", "weight files"))
  code = launch_main.main(["weights", "export-inception", str(tmp_path / "missing.pth"),
                           str(tmp_path / "out.npz")])
  err = capsys.readouterr().err
  assert code == 2 and err.startswith("error: Inception weight file") and "Traceback" not in err
