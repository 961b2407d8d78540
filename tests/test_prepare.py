"""Tokenize-once shards (research/data/prepare.py, prepared.py) and the filters at prepare time
(dedup.py, decontaminate.py): planted duplicates, near-duplicates and evaluation lines are found,
reported and removed; an interrupted preparation resumes to the same bytes; Hugging Face
datasets saved to disk are a source; a prepared folder trains through `prepared:DIR`, its
tokenizer in the run id and in the run folder."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import require_shared
from launch import data as data_cmd
from research import config as config_lib
from research.data import dedup, decontaminate, prepare, prepared, text, tokenizers
from research.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ("river stone lantern harbor meadow copper whisper garden falcon timber velvet orchard "
         "signal marble ember canyon thistle beacon saddle quiver").split()


def _doc(seed: int, n_words: int = 400) -> str:
  rng = random.Random(seed)
  lines = [" ".join(rng.choice(WORDS) + str(rng.randrange(50)) for _ in range(12))
           for _ in range(n_words // 12)]
  return "\n".join(lines) + "\n"


def _corpus(folder, n: int = 24) -> dict[str, str]:
  """n distinct documents plus planted copies: an exact one (other line ends), a near one (one
  line of 33 changed) and one with a BIG-bench example in it."""
  folder.mkdir(parents=True, exist_ok=True)
  docs = {f"doc{i:02d}.txt": _doc(i) for i in range(n)}
  docs["zz_exact.txt"] = docs["doc03.txt"].replace("\n", "\r\n")
  lines = docs["doc05.txt"].split("\n")
  lines[7] = "an entirely different line of words here"
  docs["zz_near.txt"] = "\n".join(lines)
  docs["zz_eval.txt"] = _doc(99) + "What is 50 times 20? 1000\n" + _doc(98)
  for name, body in docs.items():
    (folder / name).write_bytes(body.encode())
  return docs


def _task(folder) -> str:
  path = folder / "task.json"
  path.write_text(json.dumps({"canary": "BENCHMARK DATA SHOULD NEVER APPEAR. canary GUID abc",
                              "examples": [{"input": "What is 50 times 20?", "target": "1000"},
                                           {"input": "What is 7 plus 8?", "target": "15"}]}))
  return str(path)


def test_dedup_finds_exact_and_near_duplicates_at_the_stated_threshold():
  a = _doc(1).encode()
  lines = a.split(b"\n")
  lines[3] = b"changed words in one line only"
  near = b"\n".join(lines)
  assert dedup.jaccard(a, near) >= 0.8 > dedup.jaccard(a, _doc(2).encode())
  d = dedup.Deduplicator()
  assert d.check("a", a) is None
  assert d.check("b", _doc(2).encode()) is None
  assert d.check("c", b"  " + a.replace(b"\n", b"\r\n") + b"\n") == {"reason": "duplicate",
                                                                     "of": "a"}
  hit = d.check("d", near)
  assert hit["reason"] == "near_duplicate" and hit["of"] == "a" and hit["jaccard"] >= 0.8
  assert d.check("e", _doc(3).encode()) is None


def test_decontamination_finds_planted_evaluation_lines(tmp_path):
  index = decontaminate.EvalIndex(decontaminate.eval_texts(_task(tmp_path)))
  assert index.describe()["texts"] == 3  # the canary and two examples
  hit = index.find(b"blah blah. What is 50 times 20?\n1000. and more")
  assert hit["reason"] == "contaminated" and hit["of"].endswith("examples[0]")
  assert hit["ngram"] == "what is 50 times 20 1000"
  assert index.find(b"What is 50 times 21? 1000") is None
  assert index.find(b"x BENCHMARK DATA SHOULD NEVER APPEAR. canary GUID abc x")["of"].endswith(
      "canary")
  book = " ".join(f"w{i}" for i in range(100))
  (tmp_path / "book.txt").write_text(book)
  long_index = decontaminate.build([str(tmp_path / "book.txt")])
  assert long_index.find(f"prefix {' '.join(book.split()[40:53])} suffix".encode())
  assert long_index.find(f"prefix {' '.join(book.split()[40:52])} suffix".encode()) is None


def test_decontamination_reads_the_shared_evaluation_data():
  bigbench = require_shared("bigbench")
  heldout = require_shared("text", "heldout", "nltk_state_union.zip")
  index = decontaminate.build([str(bigbench / "arithmetic" / "2_digit_multiplication"),
                               str(heldout)])
  assert index.find(b"and so: What is 53 times 23? 1219 said he")["reason"] == "contaminated"
  import zipfile
  with zipfile.ZipFile(heldout) as z:
    speech = z.read("state_union/1962-Kennedy.txt").decode("latin-1")
  line = " ".join(speech.split()[200:220])
  assert index.find(f"A novel that quotes: {line}".encode())["of"].startswith(str(heldout))
  assert index.find(require_shared("text", "tinyshakespeare.txt").read_bytes()[:20000]) is None


@pytest.fixture(scope="module")
def prepared_byte(tmp_path_factory):
  root = tmp_path_factory.mktemp("prep")
  docs = _corpus(root / "corpus")
  out = root / "out"
  manifest = prepare.prepare(f"text:{root / 'corpus'}", "byte", str(out),
                             eval_paths=[_task(root)], shard_tokens=3000, progress=False)
  return root, docs, out, manifest


def test_the_manifest_reports_and_removes_what_was_planted(prepared_byte):
  _, docs, out, manifest = prepared_byte
  flagged = {f["id"]: f for f in manifest["filter"]["flagged"]}
  assert flagged["zz_exact.txt"]["reason"] == "duplicate"
  assert flagged["zz_exact.txt"]["of"] == "doc03.txt"
  assert flagged["zz_near.txt"]["reason"] == "near_duplicate"
  assert flagged["zz_eval.txt"]["reason"] == "contaminated"
  assert len(flagged) == 3 and manifest["filter"]["removed_documents"] == 3
  s = manifest["splits"]
  assert s["train"]["documents"] + s["val"]["documents"] == len(docs) - 3
  kept_bytes = sum(len(b.encode()) + 1 for n, b in docs.items() if n not in flagged)
  assert s["train"]["bytes"] + s["val"]["bytes"] == kept_bytes  # + 1: the end-of-document byte
  assert s["train"]["tokens"] == s["train"]["bytes"]  # bytes: one token per byte
  assert len(s["train"]["shards"]) > 3
  assert manifest["tokenizer"]["sha256"] == "byte" and len(manifest["source"]["sha256"]) == 64


def test_report_only_keeps_the_flagged_documents(prepared_byte, tmp_path):
  root = prepared_byte[0]
  manifest = prepare.prepare(f"text:{root / 'corpus'}", "byte", str(tmp_path / "keep"),
                             eval_paths=[_task(root)], remove=(), progress=False)
  assert manifest["filter"]["counts"] == {"duplicate": 1, "near_duplicate": 1, "contaminated": 1}
  assert manifest["filter"]["removed_documents"] == 0
  s = manifest["splits"]
  assert s["train"]["documents"] + s["val"]["documents"] == len(prepared_byte[1])


def test_the_shards_hold_the_kept_documents_and_train_in_step_indexed_order(prepared_byte):
  root, docs, out, manifest = prepared_byte
  data = text.load(f"prepared:{out}", seed=3)
  stream = data.source.train[np.arange(data.source.train.size)]
  pieces = bytes(stream.astype(np.uint8)).split(b"\0")[:-1]
  dropped = {"zz_exact.txt", "zz_near.txt", "zz_eval.txt"}
  dropped |= set(manifest["splits"]["val"]["document_ids"])
  assert pieces == [docs[d].encode() for d in sorted(docs) if d not in dropped]
  a, b = data.train_batch(5, 4, 64), text.load(f"prepared:{out}", seed=3).train_batch(5, 4, 64)
  assert all(np.array_equal(a[k], b[k]) for k in a)
  other = text.load(f"prepared:{out}", seed=4).train_batch(5, 4, 64)
  assert not np.array_equal(a["inputs"], other["inputs"])
  assert data.unique_train_tokens == manifest["splits"]["train"]["tokens"]
  assert data.batch_bytes_per_token(data.val_batches(1, 4, 64)) == 1.0


def test_an_interrupted_preparation_resumes_to_the_same_bytes(prepared_byte, tmp_path):
  root, _, full, _ = prepared_byte
  out = tmp_path / "killed"
  kwargs = dict(eval_paths=[_task(root)], shard_tokens=3000, progress=False)

  def stop(split, shard):
    if split == "train" and shard["file"].endswith("00002.bin"):
      raise KeyboardInterrupt  # as kill -9 would: the ledger has two train shards committed

  with pytest.raises(KeyboardInterrupt):
    prepare.prepare(f"text:{root / 'corpus'}", "byte", str(out), on_shard=stop, **kwargs)
  assert not (out / prepare.MANIFEST).exists()
  with pytest.raises(UserError, match="unfinished"):
    text.load(f"prepared:{out}")
  (out / "train" / "00003.bin").write_bytes(b"torn")  # a shard written but never committed
  (out / "train" / ".tmp-00004.bin").write_bytes(b"torn")
  manifest = prepare.prepare(f"text:{root / 'corpus'}", "byte", str(out), **kwargs)
  assert not (out / "train" / ".tmp-00004.bin").exists()  # a torn write is cleaned up
  full_manifest = json.loads((full / prepare.MANIFEST).read_text())
  assert manifest["splits"] == full_manifest["splits"]
  for shard in manifest["splits"]["train"]["shards"]:
    assert (out / shard["file"]).read_bytes() == (full / shard["file"]).read_bytes()
  with pytest.raises(UserError, match="other settings"):
    prepare.prepare(f"text:{root / 'corpus'}", "byte", str(out), shard_tokens=999,
                    progress=False)


def _files(folder) -> dict[str, bytes]:
  """Every file under `folder` (hidden ones too) by relative path: its bytes."""
  return {os.path.relpath(os.path.join(root, n), folder): open(os.path.join(root, n), "rb").read()
          for root, _, names in os.walk(folder) for n in names}


def _train_shards(ledger) -> int:
  try:
    return len(json.loads(ledger.read_text())["splits"].get("train", {}).get("shards", []))
  except FileNotFoundError:
    return 0


def test_launch_data_prepare_killed_with_sigkill_resumes_to_the_same_files(tmp_path):
  """A real kill -9: `python -m launch data prepare` in a child process, one shard per document
  (--shard-tokens 1), gets SIGKILL as soon as its ledger shows a training shard; the same command
  again finishes it, and the folder then holds exactly the files, byte for byte, of an
  uninterrupted preparation (shards, manifest, ledger, token_bytes.npy; no temporary file)."""
  corpus, n_docs = tmp_path / "corpus", 300
  corpus.mkdir()
  for i in range(n_docs):
    (corpus / f"d{i:03d}.txt").write_text(_doc(1000 + i, 60))
  args = ["prepare", "--source", f"text:{corpus}", "--tokenizer", "byte", "--shard-tokens", "1",
          "--no-progress"]
  killed, full = tmp_path / "killed", tmp_path / "full"
  proc = subprocess.Popen([sys.executable, "-m", "launch", "data", *args, "--out", str(killed)],
                          cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  deadline = time.monotonic() + 120
  while _train_shards(killed / prepare.LEDGER) == 0:
    assert proc.poll() is None, f"prepare ended before it was killed: {proc.stderr.read()}"
    assert time.monotonic() < deadline, "no training shard after 120 s"
    time.sleep(0.001)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  committed = _train_shards(killed / prepare.LEDGER)
  assert not (killed / prepare.MANIFEST).exists()
  resumed = subprocess.run([sys.executable, "-m", "launch", "data", *args, "--out", str(killed)],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
  assert resumed.returncode == 0, resumed.stderr
  assert data_cmd.main([*args, "--out", str(full)]) == 0
  manifest = json.loads((full / prepare.MANIFEST).read_text())
  n_train = len(manifest["splits"]["train"]["shards"])
  assert manifest["splits"]["train"]["documents"] == n_train  # one shard per document
  assert 0 < committed < n_train  # killed mid-way through the training shards
  before, after = _files(full), _files(killed)
  n_shards = sum(len(manifest["splits"][split]["shards"]) for split in prepare.SPLITS)
  # the shards, ledger.json, manifest.json and token_bytes.npy: nothing more, nothing less
  assert sorted(after) == sorted(before) and len(before) == n_shards + 3
  assert all(after[name] == before[name] for name in before)


def test_hugging_face_datasets_saved_to_disk_are_a_source(tmp_path):
  datasets = pytest.importorskip("datasets")
  rows = {"id": [f"r{i}" for i in range(12)], "text": [_doc(i, 120) for i in range(12)]}
  datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "one"))
  train, val = text.read_documents(f"hf:{tmp_path / 'one'}")
  assert val is None and [d for d, _ in train] == rows["id"]
  assert train[4][1] == rows["text"][4].encode()
  dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows),
                             "validation": datasets.Dataset.from_dict(
                                 {"text": [_doc(50, 120), _doc(3, 120)]})})
  dd.save_to_disk(str(tmp_path / "dict"))
  manifest = prepare.prepare(f"hf:{tmp_path / 'dict'}", "byte", str(tmp_path / "out"),
                             progress=False)
  assert manifest["splits"]["val"]["documents"] == 2
  flagged = manifest["filter"]["flagged"]  # r3 copies a validation document: removed
  assert [(f["id"], f["reason"], f["of"]) for f in flagged] == [("r3", "duplicate",
                                                                 "val:validation/1")]
  assert manifest["splits"]["train"]["documents"] == 11
  assert text.load(f"hf:{tmp_path / 'one'}").info["documents_train"] >= 10
  with pytest.raises(UserError, match="split 'nope' is not in"):
    text.read_documents(f"hf:{tmp_path / 'dict'}:nope")
  with pytest.raises(UserError, match="not a folder"):
    text.read_documents(f"hf:{tmp_path / 'missing'}")


@pytest.fixture(scope="module")
def bpe_folders(tmp_path_factory):
  """One corpus prepared with two BPEs (different vocabularies) into the same path in turn."""
  root = tmp_path_factory.mktemp("bpe")
  _corpus(root / "corpus")
  corpus = "".join(_doc(i) for i in range(30))
  toks = [tokenizers.train_bpe([corpus], v, str(root / f"bpe{v}.json"), show_progress=False)
          for v in (300, 320)]
  return root, toks


def _lm_config(source: str):
  return config_lib.load(os.path.join(REPO, "experiments/lm.py:smoke"),
                         [f"data.source={source}", "model.vocab_size=320"])[0]


def test_a_changed_tokenizer_changes_the_run_id(bpe_folders, tmp_path):
  root, (t300, t320) = bpe_folders
  out = tmp_path / "prepared"
  prepare.prepare(f"text:{root / 'corpus'}", t300.path, str(out), progress=False)
  first = _lm_config(f"prepared:{out}")
  assert first.data.tokenizer_sha256 == tokenizers.file_sha256(t300.path)
  assert config_lib.run_id(first) == config_lib.run_id(_lm_config(f"prepared:{out}"))
  data = text.load(f"prepared:{out}")
  assert data.vocab_size == t300.vocab_size and data.bytes_per_token > 1.5
  import shutil
  shutil.rmtree(out)
  prepare.prepare(f"text:{root / 'corpus'}", t320.path, str(out), progress=False)
  second = _lm_config(f"prepared:{out}")
  assert config_lib.run_id(second) != config_lib.run_id(first)
  from research.recipes import lm as lm_recipe
  with pytest.raises(UserError, match="tokenizer or data changed"):
    lm_recipe.load_data(first)  # the old run's config against the re-prepared folder
  assert lm_recipe.load_data(second).vocab_size == t320.vocab_size


def test_presets_on_prepared_shards_validate_before_the_folder_exists():
  for spec in ("experiments/lm.py:gpu-124m", "experiments/chinchilla.py:gpu"):
    cfg, study = config_lib.load(os.path.join(REPO, spec))
    study.validate(cfg)
    assert cfg.data.source.startswith("prepared:") and cfg.data.tokenizer_sha256 == ""
    assert cfg.model.vocab_size == 32768


def test_the_byte_and_bpe_smoke_presets_have_one_shape_and_one_compute():
  """results/lm/bpe-smoke's two runs: the same non-embedding shape, C equal under the 'full'
  convention (the BPE's larger logits matmul paid for with fewer tokens), the same documents and
  split, and an evaluation of every full window of the held-out text in both."""
  from research.recipes import lm as lm_recipe
  lm = config_lib.load_module(os.path.join(REPO, "experiments/lm.py"))
  byte, study = config_lib.load(os.path.join(REPO, "experiments/lm.py:byte-smoke"))
  bpe, _ = config_lib.load(os.path.join(REPO, "experiments/lm.py:bpe-smoke"))
  study.validate(byte)
  study.validate(bpe)
  a, b = lm_recipe.size(byte), lm_recipe.size(bpe)
  assert a["N_nonemb"] == b["N_nonemb"] and a["N"] < b["N"]
  assert a["C"] == b["C"] and a["flop_convention"] == b["flop_convention"] == "full"
  assert (byte.data.source, bpe.data.source) == (lm.SMOKE_TEXT, lm.BPE_SMOKE)
  assert bpe.model.vocab_size == lm.BPE_SMOKE_VOCAB and byte.model.vocab_size == 256
  assert (byte.data.split_seed, byte.data.val_fraction) == (bpe.data.split_seed,
                                                            bpe.data.val_fraction)
  assert byte.loop.eval_every > a["steps"] and bpe.loop.eval_every > b["steps"]
  held = require_shared("text", "gutenberg", "pg1184_count_of_monte_cristo.txt")  # split seed 0
  windows = (held.stat().st_size + 1) // (byte.train.seq_len + 1)  # + 1: the end-of-document
  assert 0 < windows - byte.data.val_batches * byte.train.batch_size < byte.train.batch_size


def test_data_command_prepares_and_describes(tmp_path, capsys):
  corpus = tmp_path / "corpus"
  _corpus(corpus, n=10)
  out = tmp_path / "out"
  assert data_cmd.main(["prepare", "--source", f"text:{corpus}", "--tokenizer", "byte",
                        "--out", str(out), "--remove", "none", "--no-progress"]) == 0
  printed = capsys.readouterr().out
  assert "flagged duplicate 1, near_duplicate 1, contaminated 0" in printed
  assert f"--config.data.source=prepared:{out}" in printed
  assert data_cmd.main(["info", str(out)]) == 0
  assert "removed 0 documents" in capsys.readouterr().out
  with pytest.raises(UserError, match="unknown"):
    data_cmd.main(["prepare", "--source", f"text:{corpus}", "--tokenizer", "byte",
                   "--out", str(tmp_path / "o2"), "--remove", "typos"])
  with pytest.raises(UserError, match="already prepared"):
    data_cmd.main(["prepare", "--source", f"prepared:{out}", "--tokenizer", "byte",
                   "--out", str(tmp_path / "o3")])
  assert prepared.identity(str(tmp_path / "nothing")) == {"tokenizer_sha256": "",
                                                          "prepared_sha256": ""}


def test_a_prepared_bpe_run_resumes_after_kill_9_with_the_uninterrupted_losses(bpe_folders,
                                                                               tmp_path):
  from lm_helpers import killed_run, losses, run_tiny
  root, (t300, _) = bpe_folders
  out = tmp_path / "prepared"
  prepare.prepare(f"text:{root / 'corpus'}", t300.path, str(out), progress=False)
  steps = 24
  extra = (f"data.source=prepared:{out}", "model.vocab_size=320", "loop.checkpoint_every=4")
  full = tmp_path / "full"
  assert run_tiny(full, steps, *extra) == 0
  killed = tmp_path / "killed"
  killed_run(killed, steps, 10, *extra)
  assert run_tiny(killed, steps, *extra) == 0
  assert losses(killed) == losses(full)  # exactly, step by step
  assert (killed / "tokenizer.json").read_bytes() == open(t300.path, "rb").read()
  summary = json.loads((killed / "summary.json").read_text())
  assert summary["final_val_bpb"] < summary["final_val_loss"]  # > 1.5 bytes per BPE token
