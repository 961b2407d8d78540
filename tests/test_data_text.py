"""Text data: tokenizer, sources, determinism, held-out split, token budget, bad input."""

import json
import math
import re

import numpy as np
import pytest

from research.data import corpus
from research.data import markov
from research.data import text
from research.errors import UserError

B, L = 4, 32


def _corpus(folder, n_files=12, size=3000, seed=0):
  """n_files documents of random words, each starting with a unique marker line."""
  rng = np.random.default_rng(seed)
  words = np.array(["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"])
  folder.mkdir(parents=True, exist_ok=True)
  for i in range(n_files):
    body = " ".join(rng.choice(words, size // 6))
    (folder / f"doc{i:02d}.txt").write_text(f"<<marker {i:02d}>>\n{body}\n")
  return folder


def _same(a: dict, b: dict) -> bool:
  return all(np.array_equal(a[k], b[k]) for k in ("inputs", "targets", "weights"))


def _check_layout(batch, batch_size=B, seq_len=L):
  assert batch["inputs"].shape == batch["targets"].shape == (batch_size, seq_len)
  assert batch["inputs"].dtype == batch["targets"].dtype == np.int32
  assert batch["weights"].dtype == np.float32
  np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])


def test_byte_tokenizer_round_trip():
  tok = text.ByteTokenizer()
  ids = tok.encode("héllo\r\n")
  assert tok.vocab_size == 256 and ids.dtype == np.int32
  assert ids.tolist() == list("héllo\r\n".encode())
  assert tok.decode(ids) == "héllo\r\n"
  assert tok.decode(tok.encode(b"\xff\xfeok")) == "\ufffd\ufffdok"


@pytest.mark.parametrize("spec", ["synthetic:", "text"])
def test_batches_are_a_pure_function_of_step(spec, tmp_path):
  spec = spec if spec.startswith("synthetic") else f"text:{_corpus(tmp_path / 'c')}"
  first, second = text.load(spec, seed=3), text.load(spec, seed=3)
  for step in (0, 1, 17):
    _check_layout(first.train_batch(step, B, L))
    assert _same(first.train_batch(step, B, L), second.train_batch(step, B, L))
  assert not _same(first.train_batch(0, B, L), first.train_batch(1, B, L))
  assert not _same(first.train_batch(5, B, L), text.load(spec, seed=4).train_batch(5, B, L))
  val_a, val_b = first.val_batches(3, B, L), second.val_batches(3, B, L)
  assert len(val_a) == 3 and all(_same(a, b) for a, b in zip(val_a, val_b))
  _check_layout(val_a[0])
  assert _same(first.val_batches(1, B, L)[0], val_a[0])  # fewer batches: a prefix
  json.dumps(first.describe())


def test_finite_corpus_epoch_visits_every_window_once(tmp_path):
  data = text.load(f"text:{_corpus(tmp_path / 'c')}")
  n_windows = data.unique_train_tokens // (L + 1)
  rows = np.concatenate([data.train_batch(s, 1, L)["inputs"] for s in range(n_windows)])
  assert len({r.tobytes() for r in rows}) == n_windows
  stream = data.source.train[:n_windows * (L + 1)].reshape(n_windows, L + 1)[:, :-1]
  assert {r.tobytes() for r in rows.astype(np.uint8)} == {r.tobytes() for r in stream}
  next_epoch = np.concatenate([data.train_batch(s, 1, L)["inputs"]
                               for s in range(n_windows, 2 * n_windows)])
  assert not np.array_equal(rows, next_epoch)  # reshuffled per epoch


def test_permute_is_a_bijection():
  for n in (1, 2, 7, 1000, 4099):
    out = text.permute(np.arange(n), n, (0, 1))
    assert sorted(out.tolist()) == list(range(n))
  assert not np.array_equal(text.permute(np.arange(1000), 1000, (0, 1)),
                            text.permute(np.arange(1000), 1000, (0, 2)))


def _assert_held_out(data, docs: dict[str, bytes]):
  """No validation document's id or bytes in the training stream; val ids are real documents."""
  val_ids = data.describe()["val_document_ids"]
  assert 1 <= len(val_ids) < data.describe()["documents_train"] + len(val_ids)
  train = data.source.train.tobytes()
  for doc_id in val_ids:
    piece = docs[doc_id]
    assert piece[:200] not in train and piece[-200:] not in train
    assert piece in data.source.val.tobytes()


def test_held_out_split_by_file(tmp_path):
  folder = _corpus(tmp_path / "c", n_files=20)
  data = text.load(f"text:{folder}", val_fraction=0.1)
  docs = {p.name: p.read_bytes() for p in folder.iterdir()}
  _assert_held_out(data, docs)
  assert data.describe()["documents_train"] + data.describe()["documents_val"] == 20
  assert data.unique_train_tokens + data.describe()["unique_val_tokens"] == sum(
      len(d) + 1 for d in docs.values())
  val_markers = {docs[i][:13] for i in data.describe()["val_document_ids"]}
  seen = b"".join(r.astype(np.uint8).tobytes() for b in data.val_batches(50, 1, 200)
                  for r in b["inputs"])
  assert set(re.findall(rb"<<marker \d\d>>", seen)) == val_markers
  other = text.load(f"text:{folder}", val_fraction=0.1, split_seed=1)
  assert other.describe()["val_document_ids"] != data.describe()["val_document_ids"]


@pytest.mark.parametrize("kind", ["corpus", "synthetic"])
def test_the_run_seed_orders_batches_and_never_picks_the_held_out_text(kind, tmp_path):
  """Replicate seeds of one design point are evaluated on the same text (issue 20, finding 7):
  the seed changes the training batches only; data.split_seed changes the held-out text."""
  spec = f"text:{_corpus(tmp_path / 'c', n_files=20)}" if kind == "corpus" else "synthetic:"
  runs = [text.load(spec, seed=seed, val_fraction=0.1) for seed in (0, 1, 2)]
  val = [d.val_batches(4, 2, 32) for d in runs]
  for other in val[1:]:
    assert all(_same(a, b) for a, b in zip(val[0], other))
  assert not _same(runs[0].train_batch(3, 2, 32), runs[1].train_batch(3, 2, 32))
  if kind == "corpus":
    assert len({tuple(d.describe()["val_document_ids"]) for d in runs}) == 1
  moved = text.load(spec, seed=0, split_seed=5, val_fraction=0.1).val_batches(4, 2, 32)
  assert not all(_same(a, b) for a, b in zip(val[0], moved))


def test_single_file_split_into_documents(shared_data):
  path = shared_data("text", "tinyshakespeare.txt")
  data = text.load(f"text:{path}")
  raw = path.read_bytes()
  chunks = corpus.split_at_blank_lines(path.name, raw, corpus.MAX_CHUNK_BYTES)
  assert b"".join(c for _, c in chunks) == raw
  _assert_held_out(data, dict(chunks))
  held = data.describe()["unique_val_tokens"] / (len(raw) + len(chunks))
  assert 0.02 < held < 0.1
  assert data.describe()["documents_train"] + data.describe()["documents_val"] == len(chunks)


def test_gutenberg_folder(shared_data):
  folder = shared_data("text", "gutenberg")
  data = text.load(f"text:{folder}")
  assert data.describe()["documents_train"] + data.describe()["documents_val"] == 25
  assert data.unique_train_tokens > 20_000_000
  docs = {p.name: p.read_bytes() for p in folder.iterdir()}
  _assert_held_out(data, docs)


def test_raw_bytes_kept(tmp_path):
  folder = tmp_path / "c"
  _corpus(folder)
  (folder / "crlf.txt").write_bytes(b"\xef\xbb\xbfline one\r\nline two\r\n")
  data = text.load(f"text:{folder}/*.txt,{folder}/crlf.txt")  # duplicates read once
  both = data.source.train.tobytes() + data.source.val.tobytes()
  assert both.count(b"\xef\xbb\xbfline one\r\nline two\r\n\x00") == 1


@pytest.mark.parametrize("spec", ["synthetic:order=1,symbols=8", "text"])
def test_token_budget_is_exact(spec, tmp_path):
  spec = spec if spec.startswith("synthetic") else f"text:{_corpus(tmp_path / 'c')}"
  data = text.load(spec)
  budget = 1000
  steps = math.ceil(budget / (B * L))
  weights = [data.train_batch(s, B, L, token_budget=budget)["weights"] for s in range(steps + 1)]
  assert sum(w.sum() for w in weights[:steps]) == budget
  assert weights[steps].sum() == 0 and weights[0].all()
  assert weights[steps - 1][-1, -1] == 0 and weights[steps - 1][0, 0] == 1
  assert data.train_batch(0, B, L)["weights"].all()


def test_epochs_and_budget_warning(tmp_path):
  data = text.load(f"text:{_corpus(tmp_path / 'c')}")
  unique = data.unique_train_tokens
  assert text.budget_warning(data, unique) is None
  assert data.epochs(2 * unique) == 2.0
  message = text.budget_warning(data, int(3.5 * unique))
  assert "3.50 epochs" in message and f"{unique:,}" in message
  synthetic = text.load("synthetic:")
  assert synthetic.epochs(10**12) == 0.0 and text.budget_warning(synthetic, 10**12) is None


def test_synthetic_default_and_symbols():
  data = text.load("synthetic")
  info = data.describe()["synthetic"]
  assert {k: info[k] for k in markov.DEFAULTS} == markov.DEFAULTS
  assert data.vocab_size == 256 and data.bytes_per_token == 1.0
  symbols = info["symbols"]
  assert data.unique_train_tokens is None and 0 < data.entropy_rate_nats < math.log(symbols)
  batch = data.train_batch(0, 16, 256)
  assert batch["inputs"].min() >= markov.SYMBOL_OFFSET
  assert batch["inputs"].max() < markov.SYMBOL_OFFSET + symbols
  assert not any(_same(v, batch) for v in data.val_batches(2, 16, 256))


@pytest.mark.parametrize("spec", ["synthetic:", "synthetic:order=3,symbols=6,alpha=0.3",
                                  "synthetic:order=0,symbols=5,alpha=1",
                                  "synthetic:order=3,symbols=6,form=loglinear,scale=1.5",
                                  "synthetic:order=0,symbols=5,form=loglinear"])
def test_synthetic_entropy_rate_matches_samples(spec):
  chain = text.load(spec).source.chain
  samples = chain.sample(np.random.default_rng(0), 256, 400)
  nll = -chain.log_likelihood(samples)
  stderr = nll.mean(axis=1).std() / math.sqrt(nll.shape[0])
  assert abs(nll.mean() - chain.entropy_rate) < 4 * stderr + 1e-3
  floor = chain.loss_floor(64)
  assert floor >= chain.entropy_rate - 1e-12
  assert abs(chain.conditional_entropies()[-1] - chain.entropy_rate) < 1e-12


def test_loglinear_chain_is_graded_and_dirichlet_is_not():
  """Every context length tells a loglinear chain's model more; a sparse Dirichlet chain of order
  3 hides nearly everything until the whole context is seen (the pilot that chose the form)."""
  graded = markov.make_chain(3, 32, 0.1, 0, form="loglinear", scale=1.5, decay=0.8)
  h = graded.conditional_entropies()
  assert all(a - b > 0.2 for a, b in zip(h[:-1], h[1:]))
  hidden = markov.make_chain(3, 32, 0.1, 0).conditional_entropies()
  assert hidden[0] - hidden[2] < 0.2 < hidden[2] - hidden[3]
  assert graded.probs.shape == (32**3, 32) and np.allclose(graded.probs.sum(axis=1), 1.0)
  again = markov.make_chain(3, 32, 0.1, 0, form="loglinear", scale=1.5, decay=0.8)
  assert np.array_equal(graded.probs, again.probs)


@pytest.mark.parametrize("rest,expected", [("form=zipf", "form='zipf' is not one of"),
                                           ("form=loglinear,decay=1.5", "decay=1.5"),
                                           ("form=loglinear,scale=0", "scale=0.0")])
def test_bad_loglinear_parameters_are_refused(rest, expected):
  with pytest.raises(UserError, match=expected):
    markov.parse("synthetic:" + rest, rest)


def test_synthetic_two_state_stationary_matches_closed_form():
  chain = markov.make_chain(order=1, symbols=2, alpha=1.0, chain_seed=5)
  p01, p10 = chain.probs[0, 1], chain.probs[1, 0]
  np.testing.assert_allclose(chain.stationary, [p10 / (p01 + p10), p01 / (p01 + p10)], atol=1e-10)


def _prepare(tmp_path):
  from research.data import tfds_text  # pylint: disable=import-outside-toplevel
  folder = _corpus(tmp_path / "src", n_files=6, size=1500)
  data_dir = str(tmp_path / "tfds")
  return folder, data_dir, tfds_text.prepare_local_text(str(folder), data_dir)


def test_tfds_local_text_round_trip(tmp_path):
  folder, data_dir, name = _prepare(tmp_path)
  assert name == "local_text"
  data = text.load(f"tfds:{name}", tfds_data_dir=data_dir)
  direct = text.load(f"text:{folder}")
  assert data.unique_train_tokens == direct.unique_train_tokens
  val_ids = data.describe()["val_document_ids"]
  assert sorted(val_ids) == sorted(direct.describe()["val_document_ids"])
  _assert_held_out(data, {p.name: p.read_bytes() for p in folder.iterdir()})
  again = text.load(f"tfds:{name}", tfds_data_dir=data_dir)
  assert _same(data.train_batch(3, B, L), again.train_batch(3, B, L))
  sliced = text.load(f"tfds:{name}:train[:50%]:train[50%:]", tfds_data_dir=data_dir)
  assert sliced.describe()["documents_train"] == sliced.describe()["documents_val"] == 3


def _bad_cases(tmp_path) -> list[tuple[str, dict, str]]:
  """(spec, load kwargs, a string the message must contain)."""
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "a.txt").write_bytes(b"")
  (tmp_path / "tiny.txt").write_bytes(b"just a few words")
  good = f"text:{_corpus(tmp_path / 'c')}"
  return [
      ("nosuch:thing", {}, "nosuch:thing"),
      ("text:", {}, "text:"),
      ("", {}, "''"),
      (f"text:{tmp_path}/missing.txt", {}, "missing.txt"),
      (f"text:{tmp_path}/c,{tmp_path}/gone", {}, "gone"),
      (f"text:{tmp_path}/*.nope", {}, "*.nope"),
      (f"text:{tmp_path}/empty", {}, "empty"),
      (f"text:{tmp_path}/tiny.txt", {}, "tiny.txt"),
      (good, {"val_fraction": 0.0}, "0.0"),
      (good, {"val_fraction": 1.5}, "1.5"),
      (good, {"seed": -1}, "-1"),
      ("synthetic:order=x", {}, "'x'"),
      ("synthetic:colour=red", {}, "colour=red"),
      ("synthetic:order", {}, "'order'"),
      ("synthetic:symbols=1", {}, "symbols=1"),
      ("synthetic:symbols=300", {}, "symbols=300"),
      ("synthetic:alpha=0", {}, "alpha=0"),
      ("synthetic:alpha=nan", {}, "alpha=nan"),
      ("synthetic:order=5,symbols=32", {}, "32**5"),
      ("tfds:no_such_dataset_xyz", {"tfds_data_dir": str(tmp_path / "t")}, "no_such_dataset_xyz"),
      ("tfds:local_text", {"tfds_data_dir": str(tmp_path / "t")}, "prepare_local_text"),
  ]


def test_bad_sources_raise_user_error(tmp_path):
  for spec, kwargs, needle in _bad_cases(tmp_path):
    with pytest.raises(UserError) as info:
      text.load(spec, **kwargs)
    assert needle in str(info.value), (spec, str(info.value))
    assert "allowed" in str(info.value), (spec, str(info.value))


def test_bad_batch_requests_raise_user_error(tmp_path):
  data = text.load(f"text:{_corpus(tmp_path / 'c', n_files=10, size=600)}")
  cases = [(lambda: data.train_batch(-1, B, L), "-1"),
           (lambda: data.train_batch(0, 0, L), "batch_size=0"),
           (lambda: data.train_batch(0, B, 0), "seq_len=0"),
           (lambda: data.train_batch(0, B, L, token_budget=-5), "-5"),
           (lambda: data.val_batches(1, B, 100_000), "100000")]
  for call, needle in cases:
    with pytest.raises(UserError, match="allowed") as info:
      call()
    assert needle in str(info.value)


def test_bad_tfds_split_and_missing_local_folder(tmp_path):
  from research.data import tfds_text  # pylint: disable=import-outside-toplevel
  _, data_dir, name = _prepare(tmp_path)
  with pytest.raises(UserError, match="'validation'.*allowed.*'train'"):
    text.load(f"tfds:{name}:validation", tfds_data_dir=data_dir)
  with pytest.raises(UserError, match="nowhere"):
    tfds_text.prepare_local_text(str(tmp_path / "nowhere"), data_dir)
  assert tfds_text.parse_spec("wmt:1.0.0:train[:10%]:test") == ("wmt:1.0.0", "train[:10%]", "test")
