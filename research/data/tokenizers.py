"""Tokenizers behind one interface: bytes, a byte-level BPE (Hugging Face `tokenizers`), and a
sentencepiece `.model` (the nanodo / seqio convention). Nothing is downloaded: a BPE is trained
offline from a corpus (`train_bpe`) or loaded from a `tokenizer.json`.

Every tokenizer gives `encode(text) -> int32[T]`, `decode(ids) -> str`, `vocab_size`,
`eot_id` (the end-of-document token written after every document of a packed stream) and
`token_bytes` (int32[vocab_size]: the UTF-8 bytes each token stands for), so that bits per byte
= sum of nats / ln 2 / sum of token_bytes[targets] is the same quantity whatever the tokenizer.
The end-of-document token counts as 1 byte: it stands for the NUL byte the byte tokenizer writes
after every document, so a BPE model's bits per byte compare with a byte model's on the same
documents. Subword tokenizers read text as UTF-8 (invalid bytes decode to U+FFFD).
"""

import functools
import hashlib
import json
import os
from typing import Iterable, Protocol

import numpy as np

from research.errors import UserError

EOT = "<|endoftext|>"  # the BPE's end-of-document token (GPT-2's name for it)
KINDS = ("bpe", "sentencepiece")


class Tokenizer(Protocol):
  name: str  # "byte", "bpe" or "sentencepiece"
  vocab_size: int
  eot_id: int
  path: str  # the file it was loaded from ("" for bytes)

  def encode(self, text: str) -> np.ndarray: ...
  def decode(self, ids) -> str: ...

  @property
  def token_bytes(self) -> np.ndarray: ...


def file_sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def as_text(data: str | bytes) -> str:
  return data if isinstance(data, str) else bytes(data).decode("utf-8", errors="replace")


class ByteTokenizer:
  """UTF-8 bytes as tokens: ids 0..255, one token per byte; NUL (0) ends a document."""

  name, vocab_size, eot_id, path = "byte", 256, 0, ""

  def encode(self, text: str | bytes) -> np.ndarray:
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    return np.frombuffer(data, dtype=np.uint8).astype(np.int32)

  def decode(self, ids) -> str:
    return np.asarray(ids, dtype=np.uint8).tobytes().decode("utf-8", errors="replace")

  @property
  def token_bytes(self) -> np.ndarray:
    return np.ones(self.vocab_size, np.int32)


@functools.cache
def _byte_level_alphabet() -> dict[str, int]:
  """GPT-2's printable stand-in character of every byte (tokenizers' ByteLevel), inverted."""
  keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
  chars, extra = {}, 0
  for b in range(256):
    if b in keep:
      chars[chr(b)] = b
    else:
      chars[chr(256 + extra)] = b
      extra += 1
  return chars


class BPETokenizer:
  """A byte-level BPE in Hugging Face `tokenizers`' tokenizer.json format."""

  name = "bpe"

  def __init__(self, path: str):
    from tokenizers import Tokenizer as HFTokenizer  # pylint: disable=import-outside-toplevel
    try:
      self._tok = HFTokenizer.from_file(path)
    except Exception as e:  # noqa: BLE001 (tokenizers raises a bare Exception on a bad file)
      raise UserError(f"tokenizer {path!r} is not a Hugging Face tokenizer.json ({e}); "
                      "allowed: a file written by `python -m launch tokenizer train` or "
                      "tokenizers.Tokenizer.save") from None
    self.path = path
    self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
    eot = self._tok.token_to_id(EOT)
    if eot is None:
      raise UserError(f"tokenizer {path!r} has no {EOT!r} token; allowed: a byte-level BPE "
                      f"with {EOT!r} among its special tokens (the end-of-document token)")
    self.eot_id = eot
    decoder = json.loads(self._tok.to_str()).get("decoder") or {}
    if "ByteLevel" not in {decoder.get("type"), *(d.get("type") for d in
                                                  decoder.get("decoders", ()))}:
      raise UserError(f"tokenizer {path!r} has decoder {decoder.get('type')!r}, not ByteLevel; "
                      "allowed: a byte-level BPE (GPT-2's scheme), whose tokens' bytes give bits "
                      "per byte, or a sentencepiece .model")
    # A document's own text "<|endoftext|>" is text (13 bytes), not the end-of-document token.
    self._tok.encode_special_tokens = True

  def encode(self, text: str | bytes) -> np.ndarray:
    return np.asarray(self._tok.encode(as_text(text), add_special_tokens=False).ids, np.int32)

  def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
    out = self._tok.encode_batch([as_text(t) for t in texts], add_special_tokens=False)
    return [np.asarray(e.ids, np.int32) for e in out]

  def decode(self, ids) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

  @functools.cached_property
  def token_bytes(self) -> np.ndarray:
    alphabet = _byte_level_alphabet()
    added = self._tok.get_added_tokens_decoder()  # id -> AddedToken: its text is not byte-mapped
    out = np.zeros(self.vocab_size, np.int32)
    for i in range(self.vocab_size):
      token = self._tok.id_to_token(i)
      if i in added:
        out[i] = 0 if added[i].special else len(added[i].content.encode("utf-8"))
      else:
        out[i] = sum(1 for ch in token if ch in alphabet) if token else 0
    out[self.eot_id] = 1  # it stands for the byte tokenizer's NUL after every document
    return out


class SentencePieceTokenizer:
  """A sentencepiece `.model` file; its EOS piece (else its first control piece) ends a
  document."""

  name = "sentencepiece"

  def __init__(self, path: str):
    import sentencepiece as spm  # pylint: disable=import-outside-toplevel
    self._sp = spm.SentencePieceProcessor()
    try:
      self._sp.Load(path)
    except (OSError, RuntimeError) as e:
      raise UserError(f"tokenizer {path!r} is not a sentencepiece model ({e}); allowed: a "
                      ".model file written by sentencepiece") from None
    self.path = path
    self.vocab_size = self._sp.GetPieceSize()
    eos = self._sp.eos_id()
    if eos < 0:
      raise UserError(f"sentencepiece model {path!r} has no EOS piece (eos_id -1); allowed: a "
                      "model with an EOS id, the end-of-document token")
    self.eot_id = eos

  def encode(self, text: str | bytes) -> np.ndarray:
    return np.asarray(self._sp.EncodeAsIds(as_text(text)), np.int32)

  def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
    return [np.asarray(ids, np.int32) for ids in self._sp.Encode([as_text(t) for t in texts])]

  def decode(self, ids) -> str:
    return self._sp.DecodeIds([int(i) for i in ids])

  @functools.cached_property
  def token_bytes(self) -> np.ndarray:
    sp = self._sp
    out = np.zeros(self.vocab_size, np.int32)
    for i in range(self.vocab_size):
      if i == self.eot_id or sp.IsByte(i):
        out[i] = 1
      elif not (sp.IsControl(i) or sp.IsUnknown(i) or sp.IsUnused(i)):
        out[i] = len(sp.IdToPiece(i).replace("\u2581", " ").encode("utf-8"))
    return out


def load(path: str) -> Tokenizer:
  """'' or 'byte': bytes; a `.model` file: sentencepiece; another file: a tokenizer.json BPE."""
  if path in ("", "byte"):
    return ByteTokenizer()
  if not os.path.isfile(path):
    raise UserError(f"tokenizer {path!r} does not exist; allowed: 'byte', a tokenizer.json "
                    "(python -m launch tokenizer train) or a sentencepiece .model file")
  return SentencePieceTokenizer(path) if path.endswith(".model") else BPETokenizer(path)


def identity(tok: Tokenizer) -> dict:
  """What names a tokenizer in a manifest and a config: kind, vocabulary, file hash."""
  return {"kind": tok.name, "vocab_size": int(tok.vocab_size), "eot_id": int(tok.eot_id),
          "sha256": file_sha256(tok.path) if tok.path else "byte"}


def file_name(tok: Tokenizer) -> str:
  """The name a tokenizer's copy has in a prepared folder or a run folder."""
  return {"bpe": "tokenizer.json", "sentencepiece": "tokenizer.model"}.get(tok.name, "")


def copy_into(tok: Tokenizer, folder: str) -> str:
  """Copies the tokenizer's file into `folder` (atomically); returns the copy's path or ''."""
  name = file_name(tok)
  if not name:
    return ""
  from research import fileio  # pylint: disable=import-outside-toplevel
  dest = os.path.join(folder, name)
  with open(tok.path, "rb") as f:
    fileio.atomic_write_bytes(dest, f.read())
  return dest


def train_bpe(texts: Iterable[str], vocab_size: int, out: str, *, length: int | None = None,
              min_frequency: int = 2, show_progress: bool = True) -> BPETokenizer:
  """Trains a byte-level BPE (GPT-2's pre-tokenizer, no prefix space, EOT as its one special
  token) on `texts` and saves it as a tokenizer.json at `out`."""
  from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers
  if not isinstance(vocab_size, int) or vocab_size < 257:
    raise UserError(f"--vocab {vocab_size!r}: allowed: an integer >= 257 (256 bytes + EOT)")
  tok = HFTokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                special_tokens=[EOT], show_progress=show_progress,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(texts, trainer, length=length)
  _save(out, tok.to_str().encode("utf-8"))
  return BPETokenizer(out)


def train_sentencepiece(texts: Iterable[str], vocab_size: int, out: str) -> SentencePieceTokenizer:
  """Trains a sentencepiece BPE that round-trips text exactly (identity normalisation, no dummy
  prefix, byte fallback) and saves it as a .model file at `out`."""
  import io
  import sentencepiece as spm  # pylint: disable=import-outside-toplevel
  if not out.endswith(".model"):
    raise UserError(f"--out {out!r}: a sentencepiece model's file name ends in .model")
  model = io.BytesIO()
  lines = (line for t in texts for line in t.split("\n") if line.strip())
  spm.SentencePieceTrainer.Train(
      sentence_iterator=lines, model_writer=model, vocab_size=vocab_size, model_type="bpe",
      normalization_rule_name="identity", add_dummy_prefix=False, remove_extra_whitespaces=False,
      split_digits=True, byte_fallback=True, character_coverage=1.0, bos_id=-1, eos_id=1,
      unk_id=0, pad_id=-1, max_sentence_length=1 << 16, minloglevel=2,
      train_extremely_large_corpus=False)
  _save(out, model.getvalue())
  return SentencePieceTokenizer(out)


def _save(out: str, data: bytes) -> None:
  from research import fileio  # pylint: disable=import-outside-toplevel
  folder = os.path.dirname(os.path.abspath(out))
  fileio.writable_folder(folder, "--out's folder")
  fileio.atomic_write_bytes(out, data)
