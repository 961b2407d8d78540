"""Our checkpoints as an lm-evaluation-harness model, registered as "scaling-lab".

    pip install -e ".[harness]"
    import lm_eval, research.evals.harness  # registers the model "scaling-lab"
    lm_eval.simple_evaluate(model="scaling-lab", model_args="workdir=runs/smoke",
                            tasks=["my_task"], task_manager=lm_eval.tasks.TaskManager(
                                include_path="my_tasks/"))

or from the shell, lm_eval's own command line with this model registered:

    python -m research.evals.harness --model scaling-lab --model_args workdir=runs/smoke \
        --tasks my_task --include_path my_tasks/

model_args: `workdir=RUN` (a run folder, research.evals.runs.load_run), optionally `step=N` (a
kept checkpoint; default the newest). The harness's batch size is the number of sequences per
forward pass (64 when none or "auto" is given; lm_eval's command line passes 1 unless told
--batch_size).

The three request types, on the run's byte tokenizer (one token per UTF-8 byte; the document
separator byte 0 is the end-of-text token, and the prefix of an empty context and of a rolling
document, as in training):
  loglikelihood          (sum of the continuation's token log-probs, whether every continuation
                         token is the argmax), teacher-forced by research.evals.generate.score;
                         a context too long for the model keeps its last tokens (a continuation
                         longer than the context is a UserError).
  loglikelihood_rolling  the log-likelihood of a whole document in windows of the model's
                         context, every token predicted once and with as much context as fits
                         (lm_eval.utils.get_rolling_token_windows, as the harness's own models).
  generate_until         greedy KV-cached decoding (research.evals.generate.generate) of up to
                         max_gen_toks tokens (default 256, at most the context), cut before the
                         first `until` string (end-of-text always among them); a long prompt
                         keeps its last tokens; sampling is refused (greedy only).

lm_eval is imported here only: the rest of the project never needs it.
"""

import collections
import os

try:
  from lm_eval.api.model import TemplateLM
  from lm_eval.api.registry import register_model
  from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
except ImportError as e:  # the optional extra
  raise ImportError("research.evals.harness needs lm-evaluation-harness: "
                    'pip install -e ".[harness]"') from e

from research.data import text
from research.errors import UserError

NAME = "scaling-lab"
DEFAULT_MAX_GEN_TOKS = 256
DEFAULT_BATCH_SIZE = 64


def _generate_module():
  from research.evals import generate  # imported late: written alongside this adapter
  return generate


def rolling_windows(tokens: list[int], prefix_token: int,
                    max_length: int) -> list[tuple[list[int], list[int]]]:
  """(context, continuation) pairs that predict every token of `tokens` exactly once, each
  window as long as the model's context (the harness's rolling windows, made disjoint)."""
  return [make_disjoint_window(w) for w in
          get_rolling_token_windows(token_list=tokens, prefix_token=prefix_token,
                                    max_seq_len=max_length, context_len=1)]


def cut_at(text_out: str, until: list[str]) -> str:
  """The text before the first occurrence of any `until` string."""
  end = len(text_out)
  for stop in until:
    if stop:
      i = text_out.find(stop)
      if i != -1:
        end = min(end, i)
  return text_out[:end]


@register_model(NAME)
class ScalingLabLM(TemplateLM):
  """A scaling-lab run's newest checkpoint (or `step`) as an lm_eval model (greedy only)."""

  def __init__(self, workdir: str | None = None, step=None, batch_size=None,
               max_gen_toks=DEFAULT_MAX_GEN_TOKS, **kwargs):
    super().__init__()
    if not workdir:
      raise UserError(f"model {NAME!r} needs model_args workdir=RUN_FOLDER")
    unknown = sorted(k for k in kwargs if k not in ("device", "max_batch_size"))
    if unknown:  # device, max_batch_size: the harness's; JAX places the model itself
      raise UserError(f"model {NAME!r}: unknown model_args {', '.join(unknown)}; allowed: "
                      "workdir, step, batch_size, max_gen_toks")
    from research.evals import runs
    self.run = runs.load_run(workdir, step=None if step in (None, "") else int(step))
    self.batch_size = (DEFAULT_BATCH_SIZE if batch_size in (None, "", "auto")
                       or str(batch_size).startswith("auto") else int(batch_size))
    self.max_gen_toks = int(max_gen_toks)
    self.byte_tokenizer = self.run.tokenizer

  # Tokens.

  @property
  def eot_token_id(self) -> int:
    return text.DOC_SEPARATOR

  @property
  def max_length(self) -> int:
    return self.run.model.context

  def tok_encode(self, string: str, add_special_tokens=None, **kwargs) -> list[int]:
    return self.byte_tokenizer.encode(string).tolist()

  def tok_decode(self, tokens) -> str:
    return self.byte_tokenizer.decode(list(tokens))

  def get_model_info(self) -> dict:
    from research.models import transformer
    counts = transformer.param_counts(self.run.model)
    return {"workdir": self.run.workdir, "run_id": self.run.run_id, "step": self.run.step,
            "params_total": counts.total, "params_non_embedding": counts.non_embedding,
            "context": self.max_length}

  # Scoring.

  def score_pairs(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
    """(sum of the continuation's log-probs, every continuation token the argmax) per pair."""
    results = [(0.0, True)] * len(pairs)  # an empty continuation: log 1, trivially greedy
    scored = [i for i, (_, continuation) in enumerate(pairs) if len(continuation)]
    scores = _generate_module().score(
        self.run.model, self.run.params,
        [(list(pairs[i][0]) or [self.eot_token_id], list(pairs[i][1])) for i in scored],
        batch_size=self.batch_size)
    for i, s in zip(scored, scores):
      results[i] = (s.logprob, s.all_correct)
    return results

  def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
    results = self.score_pairs([(context, continuation)
                                for _, context, continuation in requests])
    for (cache_key, _, _), result in zip(requests, results):
      if cache_key is not None:
        self.cache_hook.add_partial("loglikelihood", cache_key, result)
    return results

  def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
    windows, owner = [], []
    for i, (string,) in enumerate(req.args for req in requests):
      for pair in rolling_windows(self.tok_encode(string), self.eot_token_id, self.max_length):
        windows.append(pair)
        owner.append(i)
    totals = [0.0] * len(requests)
    for i, (logprob, _) in zip(owner, self.score_pairs(windows)):
      totals[i] += logprob
    for req, total in zip(requests, totals):
      self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
    return totals

  # Generation.

  def _gen_settings(self, gen_kwargs: dict) -> tuple[list[str], int]:
    kwargs = dict(gen_kwargs or {})
    if kwargs.pop("do_sample", False) or float(kwargs.pop("temperature", 0.0) or 0.0) > 0:
      raise UserError(f"model {NAME!r} decodes greedily only: set do_sample: false and "
                      "temperature: 0 in the task's generation_kwargs")
    until = kwargs.pop("until", None) or []
    until = [until] if isinstance(until, str) else list(until)
    eot = self.tok_decode([self.eot_token_id])
    if eot not in until:
      until.append(eot)
    max_gen = int(kwargs.pop("max_gen_toks", self.max_gen_toks))
    return until, max(1, min(max_gen, self.max_length))

  def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
    groups = collections.defaultdict(list)  # (max_gen, stop token) -> request indices
    settings = []
    for i, req in enumerate(requests):
      context, gen_kwargs = req.args
      until, max_gen = self._gen_settings(gen_kwargs)
      # A one-byte stop string (the task's first, else end-of-text) ends decoding early; any
      # of them is safe, since the text is cut before the first of all of them anyway.
      singles = [self.tok_encode(s)[0] for s in until if len(self.tok_encode(s)) == 1]
      stop = singles[0] if singles else None
      settings.append((context, until))
      groups[(max_gen, stop)].append(i)
    outputs = [""] * len(requests)
    generate = _generate_module().generate
    for (max_gen, stop), indices in groups.items():
      # An empty context starts from end-of-text; generate keeps a long one's last tokens.
      prompts = [self.tok_encode(settings[i][0]) or [self.eot_token_id] for i in indices]
      new_tokens = generate(self.run.model, self.run.params, prompts, max_gen,
                            stop_token=stop, batch_size=self.batch_size)
      for i, tokens in zip(indices, new_tokens):
        context, until = settings[i]
        outputs[i] = cut_at(self.tok_decode(tokens), until)
        self.cache_hook.add_partial("generate_until", requests[i].args, outputs[i])
    return outputs


def workdir_arg(path: str) -> str:
  """model_args for a run folder (commas are the harness's separator and cannot appear)."""
  path = os.path.abspath(path)
  if "," in path or "=" in os.path.basename(path):
    raise UserError(f"run folder {path!r}: lm_eval's model_args cannot hold ',' or '='; pass "
                    "model_args as a dict instead")
  return f"workdir={path}"


def main() -> None:
  """lm_eval's command line, with the model "scaling-lab" registered (this module)."""
  from lm_eval.__main__ import cli_evaluate
  cli_evaluate()


if __name__ == "__main__":
  main()
