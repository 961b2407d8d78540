"""The lm-evaluation-harness adapter (research/evals/harness.py) on a tiny run, offline: task YAMLs
over local JSON files, run through lm_eval.simple_evaluate, checked against our own scoring and
generation and against the transformer's forward pass."""

import json
import math
import os

import numpy as np
import pytest
import scipy.special

# No network: the harness's data sets come from local JSON files only.
for _var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
  os.environ.setdefault(_var, "1")

import lm_helpers  # noqa: E402
from research import config as config_lib  # noqa: E402
from research.errors import UserError  # noqa: E402

MC = [{"question": "The sky is", "choices": [" blue", " green", " loud"], "label": 0},
      {"question": "One plus one is ", "choices": ["two", "three"], "label": 0},
      {"question": "", "choices": ["abc", "xyz"], "label": 1}]
GEN = [{"prompt": "Hello, wor", "answer": "ld"},
       {"prompt": "the the the" * 5, "answer": " the"},   # longer than the context (32)
       {"prompt": "", "answer": "x"}]
DOCS = [{"text": "short doc"},                                # one window
        {"text": "A longer document, " * 6}]                 # 114 bytes: four windows of 32
MAX_GEN = 8


def _task(name: str, data: str, cache: str, **fields) -> str:
  lines = [f"task: {name}", "dataset_path: json", "dataset_kwargs:", "  data_files:",
           f"    test: {data}", f"  cache_dir: {cache}", "test_split: test"]
  lines += [f"{k}: {json.dumps(v)}" for k, v in fields.items()]
  return "\n".join(lines) + "\n"


def _write_tasks(folder) -> None:
  cache = folder / "hf-cache"
  for name, rows in (("mc", MC), ("gen", GEN), ("doc", DOCS)):
    with open(folder / f"{name}.jsonl", "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in rows)
  (folder / "sl_mc.yaml").write_text(_task(
      "sl_mc", folder / "mc.jsonl", cache, output_type="multiple_choice",
      doc_to_text="{{question}}", doc_to_choice="choices", doc_to_target="label",
      target_delimiter="", metric_list=[{"metric": "acc"}, {"metric": "acc_norm"}]))
  (folder / "sl_gen.yaml").write_text(_task(
      "sl_gen", folder / "gen.jsonl", cache, output_type="generate_until",
      doc_to_text="{{prompt}}", doc_to_target="{{answer}}", target_delimiter="",
      generation_kwargs={"until": ["\n", "e"], "max_gen_toks": MAX_GEN, "do_sample": False},
      metric_list=[{"metric": "exact_match"}]))
  (folder / "sl_doc.yaml").write_text(_task(
      "sl_doc", folder / "doc.jsonl", cache, output_type="loglikelihood_rolling",
      doc_to_text="", doc_to_target="{{text}}",
      metric_list=[{"metric": m} for m in ("word_perplexity", "byte_perplexity",
                                           "bits_per_byte")]))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("harness") / "run"
  assert lm_helpers.run_tiny(workdir, 20) == 0
  return workdir


def test_load_run(tiny_run, tmp_path):
  from research.evals import runs
  run = runs.load_run(tiny_run)
  assert run.step == 20 and run.model.d_model == 32 and run.model.context == 32
  assert run.config.model.n_layers == 1 and run.tokenizer.decode(run.tokenizer.encode("hé")) == "hé"
  with pytest.raises(UserError, match="no such run folder"):
    runs.load_run(tmp_path / "absent")
  with pytest.raises(UserError, match="not a run folder"):
    runs.load_run(tmp_path)
  record = json.loads((tiny_run / "config.json").read_text())
  (tmp_path / "fresh").mkdir()
  (tmp_path / "fresh" / "config.json").write_text(json.dumps(record))
  with pytest.raises(UserError, match="no checkpoint"):
    runs.load_run(tmp_path / "fresh")
  del record["config"]["model"]["d_model"]
  record["run_id"] = config_lib.run_id_of(record["config"])  # not an edited file: another run's
  (tmp_path / "unet").mkdir()
  (tmp_path / "unet" / "config.json").write_text(json.dumps(record))
  with pytest.raises(UserError, match="checkpoint of a different model family"):
    runs.load_run(tmp_path / "unet")


def _harness_split(enc, context: str, continuation: str) -> tuple[list[int], list[int]]:
  """The harness's tokens of a (context, continuation) request: trailing spaces of the context
  move to the continuation; an empty context is the document separator (0)."""
  if not context:
    return [0], enc(continuation)
  stripped = context.rstrip()
  return enc(stripped), enc(context[len(stripped):] + continuation)


def _forward_logprobs(run, inputs: list[int]) -> np.ndarray:
  """log softmax of the plain (uncached) forward pass, float64[len(inputs), V]; the inputs are
  right-padded to the context (causal: the padding changes no earlier position), one compile."""
  import jax
  from research.models import transformer
  padded = np.zeros((1, run.model.context), np.int32)
  padded[0, :len(inputs)] = inputs
  logits = np.asarray(jax.jit(transformer.apply, static_argnums=0)(run.model, run.params, padded))
  return scipy.special.log_softmax(logits[0, :len(inputs)].astype(np.float64), axis=-1)


def _rolling_by_hand(run, tokens: list[int]) -> float:
  """Every token predicted once: window 1 is [separator] + tokens[:L-1]; each later window
  predicts the next up to L tokens from the L tokens before its last one."""
  L, total, done = run.model.context, 0.0, 0
  while done < len(tokens):
    if done == 0:
      n = min(L, len(tokens))
      inputs, targets = [0] + tokens[:n - 1], tokens[:n]
    else:
      n = min(L, len(tokens) - done)
      end = done + n
      inputs, targets = tokens[end - L - 1:end - 1], tokens[done:end]
    logp = _forward_logprobs(run, inputs)[-n:]
    total += float(logp[np.arange(n), targets].sum())
    done += n
  return total


def test_simple_evaluate_offline(tiny_run, tmp_path):
  lm_eval = pytest.importorskip(
      "lm_eval", reason='lm-evaluation-harness is not installed (pip install -e ".[harness]")')
  from lm_eval.tasks import TaskManager

  from research.evals import generate, harness, runs
  _write_tasks(tmp_path)
  out = lm_eval.simple_evaluate(
      model="scaling-lab", model_args=harness.workdir_arg(tiny_run),
      tasks=["sl_mc", "sl_gen", "sl_doc"], bootstrap_iters=0, log_samples=True,
      task_manager=TaskManager(include_path=str(tmp_path), include_defaults=False))
  results, samples = out["results"], out["samples"]
  for task, keys in (("sl_mc", ("acc,none", "acc_norm,none")), ("sl_gen", ("exact_match,none",)),
                     ("sl_doc", ("word_perplexity,none", "byte_perplexity,none",
                                 "bits_per_byte,none"))):
    for key in keys:
      assert math.isfinite(results[task][key]), (task, key, results[task])
  assert out["config"]["run_id"] == json.loads((tiny_run / "config.json").read_text())["run_id"]

  run = runs.load_run(tiny_run)
  enc = lambda s: run.tokenizer.encode(s).tolist()  # noqa: E731

  # loglikelihood: our teacher-forced scores of the same strings; an empty context is
  # conditioned on the document separator.
  mc = [(s["arguments"], s["resps"]) for s in samples["sl_mc"]]
  pairs = [_harness_split(enc, context, continuation)
           for args, _ in mc for context, continuation in args]
  ours = generate.score(run.model, run.params, pairs)
  theirs = [r[0] for _, resps in mc for r in resps]
  assert len(theirs) == sum(len(d["choices"]) for d in MC)
  for (logprob, greedy), s, (context, continuation) in zip(theirs, ours, pairs):
    assert logprob == pytest.approx(s.logprob, rel=1e-5, abs=1e-4)
    assert greedy == s.all_correct
    logp = _forward_logprobs(run, (context + continuation)[:-1])[len(context) - 1:]
    assert logprob == pytest.approx(logp[np.arange(len(continuation)), continuation].sum(),
                                    rel=1e-4, abs=1e-3)
  chosen = [np.argmax([r[0][0] for r in resps]) for _, resps in mc]
  assert results["sl_mc"]["acc,none"] == pytest.approx(
      np.mean([c == doc["label"] for c, doc in zip(chosen, MC)]))

  # generate_until: our greedy generation, cut before the first stop string.
  for sample, doc in zip(samples["sl_gen"], GEN):
    prompt = enc(doc["prompt"]) or [0]
    tokens = generate.generate(run.model, run.params, [prompt], MAX_GEN)[0]
    text = run.tokenizer.decode(tokens)
    for stop in ("\n", "e", "\x00"):
      text = text.split(stop)[0]
    assert sample["resps"][0][0] == text

  # loglikelihood_rolling: windows of the model's context, checked against the forward pass.
  total_ll, total_bytes = 0.0, 0
  for sample, doc in zip(samples["sl_doc"], DOCS):
    expected = _rolling_by_hand(run, enc(doc["text"]))
    assert sample["resps"][0][0] == pytest.approx(expected, rel=1e-4)
    total_ll, total_bytes = total_ll + expected, total_bytes + len(enc(doc["text"]))
  assert results["sl_doc"]["bits_per_byte,none"] == pytest.approx(
      -total_ll / total_bytes / math.log(2), rel=1e-4)


def test_greedy_only(tiny_run):
  pytest.importorskip("lm_eval", reason='lm-evaluation-harness is not installed')
  from research.evals import harness
  lm = harness.ScalingLabLM(workdir=str(tiny_run), batch_size="8")
  assert lm.max_length == 32 and lm.batch_size == 8
  with pytest.raises(UserError, match="greedily"):
    lm._gen_settings({"do_sample": True})
  assert harness.cut_at("abc\ndef", ["\n", "b"]) == "a"
  windows = harness.rolling_windows(list(range(1, 71)), 0, 32)
  assert [t for _, cont in windows for t in cont] == list(range(1, 71))
  assert all(len(c) + len(t) - 1 <= 32 for c, t in windows)
