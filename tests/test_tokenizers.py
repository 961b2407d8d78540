"""Tokenizers (research/data/tokenizers.py): a byte-level BPE and a sentencepiece model trained
offline round-trip the shared corpora exactly, and their token byte counts add up to the text's
UTF-8 bytes (the divisor of bits per byte); the `tokenizer` command trains and describes one."""

import numpy as np
import pytest

from conftest import require_shared
from launch import tokenizer as tokenizer_cmd
from research.data import tokenizers
from research.errors import UserError

BOOKS = ("tinyshakespeare.txt", "gutenberg/pg74_adventures_of_tom_sawyer.txt",  # BOM
         "gutenberg/pg1184_count_of_monte_cristo.txt")  # CRLF line ends


def _read(name: str) -> str:
  return require_shared("text", *name.split("/")).read_bytes().decode("utf-8")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  folder = tmp_path_factory.mktemp("tok")
  corpus = _read("tinyshakespeare.txt")
  bpe = tokenizers.train_bpe([corpus], 512, str(folder / "bpe.json"), show_progress=False)
  sp = tokenizers.train_sentencepiece([corpus], 512, str(folder / "sp.model"))
  return {"bpe": bpe, "sentencepiece": sp, "byte": tokenizers.ByteTokenizer()}


@pytest.mark.parametrize("kind", ["bpe", "sentencepiece", "byte"])
@pytest.mark.parametrize("book", BOOKS)
def test_round_trip_and_bytes_on_the_shared_corpora(trained, kind, book):
  tok = trained[kind]
  text = _read(book)
  text = text[:300_000] if kind == "sentencepiece" else text  # sentencepiece is slower
  ids = tok.encode(text)
  assert ids.dtype == np.int32 and ids.min() >= 0 and ids.max() < tok.vocab_size
  assert tok.decode(ids) == text
  assert int(tok.token_bytes[ids].sum()) == len(text.encode("utf-8"))
  if kind != "byte":
    assert len(ids) < 0.6 * len(text.encode("utf-8"))  # a subword vocabulary compresses


def test_the_end_of_document_token_counts_one_byte_like_the_byte_streams_nul(trained):
  for tok in trained.values():
    assert tok.token_bytes[tok.eot_id] == 1
  assert trained["bpe"].decode([trained["bpe"].eot_id]) == tokenizers.EOT


def test_a_documents_own_endoftext_text_is_text_not_the_end_of_document_token(trained):
  """Web text holds the string "<|endoftext|>" now and then: it must not become the token that
  ends a document (a false document boundary, and 1 byte counted for 13)."""
  bpe = trained["bpe"]
  text = f"before {tokenizers.EOT} after\n"
  for ids in (bpe.encode(text), bpe.encode_batch([text])[0]):
    assert bpe.eot_id not in ids.tolist()
    assert bpe.decode(ids) == text and int(bpe.token_bytes[ids].sum()) == len(text.encode())


def test_a_tokenizer_json_that_is_not_byte_level_is_refused(tmp_path):
  """Bits per byte counts a BPE token's bytes from GPT-2's byte-to-character map, which only a
  byte-level tokenizer.json has: another (here a Metaspace one, sentencepiece's scheme in
  tokenizers' format) is a one-line error, not a silent miscount."""
  from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers
  tok = HFTokenizer(models.BPE())
  tok.pre_tokenizer, tok.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
  tok.train_from_iterator(["the quick brown fox jumps over the lazy dog"] * 20,
                          trainers.BpeTrainer(vocab_size=60, special_tokens=[tokenizers.EOT],
                                              show_progress=False))
  tok.save(str(tmp_path / "metaspace.json"))
  with pytest.raises(UserError, match="not ByteLevel"):
    tokenizers.load(str(tmp_path / "metaspace.json"))


def test_loading_by_file_gives_the_same_tokenizer_and_a_stable_hash(trained, tmp_path):
  for kind in ("bpe", "sentencepiece"):
    tok = trained[kind]
    again = tokenizers.load(tok.path)
    text = "To be, or not to be: that is the question.\n"
    assert again.name == kind and np.array_equal(again.encode(text), tok.encode(text))
    assert tokenizers.identity(again) == tokenizers.identity(tok)
    assert len(tokenizers.identity(tok)["sha256"]) == 64
  assert tokenizers.identity(tokenizers.load("byte"))["sha256"] == "byte"


def test_bad_tokenizer_files_are_one_line_errors(tmp_path):
  with pytest.raises(UserError, match="does not exist"):
    tokenizers.load(str(tmp_path / "missing.json"))
  (tmp_path / "bad.json").write_text("{not json")
  with pytest.raises(UserError, match="not a Hugging Face tokenizer.json"):
    tokenizers.load(str(tmp_path / "bad.json"))
  (tmp_path / "bad.model").write_bytes(b"\x00garbage")
  with pytest.raises(UserError, match="not a sentencepiece model"):
    tokenizers.load(str(tmp_path / "bad.model"))
  with pytest.raises(UserError, match="257"):
    tokenizers.train_bpe(["abc"], 100, str(tmp_path / "small.json"))


def test_tokenizer_command_trains_then_describes(tmp_path, capsys):
  from research.data import corpus as corpus_lib, text
  corpus = tmp_path / "corpus"
  corpus.mkdir()
  for i in range(12):
    (corpus / f"{i}.txt").write_text(f"document {i}: the quick brown fox jumps over the dog\n" * 50)
  out = tmp_path / "bpe.json"
  assert tokenizer_cmd.main(["train", "--vocab", "300", "--input", str(corpus),
                             "--out", str(out)]) == 0
  printed = capsys.readouterr().out
  # fit on the training documents only: those text.load holds out (split seed 0) are left out
  held = text.load(f"text:{corpus}").info["val_document_ids"]
  train, val = corpus_lib.train_val_split("s", corpus_lib.read_files("s", str(corpus)), 0, 0.05)
  assert [d for d, _ in val] == held and len(train) == 12 - len(held) < 12
  assert f"from {len(train)} training documents" in printed
  assert 257 < tokenizers.load(str(out)).vocab_size <= 300
  assert tokenizer_cmd.main(["info", str(out)]) == 0
  assert f"sha256={tokenizers.file_sha256(str(out))}" in capsys.readouterr().out
