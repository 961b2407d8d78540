"""Scoring BIG-bench tasks (research.data.bigbench.Task) on a transformer.

Two uses:
  * `task_metrics`: the emergence study's metrics of one task, from one teacher-forced pass over
    prompt + answer + stop (research.evals.generate.score) and, for the edit distance, one greedy
    generation: exact_match (every answer token is the argmax, which is exactly when greedy
    decoding reproduces the answer and stops: see research/evals/generate.py), token_accuracy,
    target_logprob (nats, summed over the answer's tokens), brier (per token, over the
    vocabulary), edit_distance (tokens, greedy output against the answer) and answer_tokens;
    examples with target_scores add multiple_choice_grade, mc_brier and ece, the reliability
    diagram's bins, and Schaeffer et al. (2024)'s decomposition: mc_logprob_correct and
    mc_p_correct (the correct choice's likelihood, unnormalised), mc_p_correct_renorm (renormalised
    over the choices) and mc_p_wrong_max_renorm (the mass on the most likely wrong choice).
    Examples with a `group` (sparse parity's subtasks) are also scored per group, as tasks named
    TASK_GROUP.
  * `bigbench_scores`: a task scored as BIG-bench scores it (`python -m launch eval`): generative
    examples by exact_str_match of the post-processed greedy output (stop string, output regex),
    examples with target_scores by multiple_choice_grade over the log-likelihoods of the choices.

The answer tokens of the study's metrics include the stop string (the model must also end its
answer), so T answer tokens means the digits plus the newline.
"""

import numpy as np

from research.data import bigbench
from research.evals import generate, metrics

CALIBRATION_BINS = 10


def _encode(tokenizer, text: str) -> list[int]:
  return [int(t) for t in tokenizer.encode(text)]


def _bootstrap(values, seed: int) -> tuple[float, float]:
  return metrics.bootstrap_interval(values, n=200, seed=seed)


class _Plan:
  """Every teacher-forced pair and generation prompt of a list of tasks, so that one batched
  `generate.score` call and one `generate.generate` call serve them all (fewer compiled shapes
  and partial batches than a call per task)."""

  def __init__(self, tasks, tokenizer, edit_distance: bool):
    self.pairs, self.prompts, self.parts = [], [], []
    for task in tasks:
      stop = task.stop_string or bigbench.LINE_END
      generative = [e for e in task.examples if e.target is not None]
      choice = [e for e in task.examples if e.target_scores]
      part = dict(task=task, generative=generative, choice=choice, stop=stop)
      if generative:
        prompts = [_encode(tokenizer, bigbench.prompt(task, e, choices=False))
                   for e in generative]
        answers = [_encode(tokenizer, bigbench.answer(e) + stop) for e in generative]
        part.update(scored=len(self.pairs), answers=answers, generated=len(self.prompts))
        self.pairs += list(zip(prompts, answers))
        if edit_distance:
          self.prompts += prompts
      if choice:
        spans = []
        for e in choice:
          context = _encode(tokenizer, bigbench.prompt(task, e, choices=False))
          spans.append((len(self.pairs), list(e.target_scores)))
          self.pairs += [(context, _encode(tokenizer, option)) for option in e.target_scores]
        part["spans"] = spans
      self.parts.append(part)
    answers = [a for p in self.parts for a in p.get("answers", [])]
    self.max_new = max((len(a) for a in answers), default=1)
    stops = {tuple(_encode(tokenizer, p["stop"])) for p in self.parts}
    self.stop_token = next(iter(stops))[0] if len(stops) == 1 and len(next(iter(stops))) == 1 \
        else None
    self.edit_distance = edit_distance


def _generative(scores, answers, outputs) -> dict:
  hits = np.array([s.all_correct for s in scores], float)
  out = {
      "exact_match": float(hits.mean()),
      "token_accuracy": float(np.mean([s.token_accuracy for s in scores])),
      "target_logprob": float(np.mean([s.logprob for s in scores])),
      "brier": float(np.mean([s.mean_brier for s in scores])),
      "answer_tokens": float(np.mean([s.n_tokens for s in scores])),
      "examples": float(len(scores)),
  }
  out["exact_match_lo"], out["exact_match_hi"] = _bootstrap(hits, seed=len(hits))
  if outputs is not None:
    out["edit_distance"] = float(np.mean([metrics.edit_distance(_cut(o, a[-1]), a)
                                          for o, a in zip(outputs, answers)]))
  return out


def _cut(output, stop):
  """A generated continuation up to its first stop token (kept)."""
  return output[:output.index(stop) + 1] if stop in output else output


def _choice_mass(logps, target_scores) -> tuple[float, float, float]:
  """Schaeffer et al. (2024)'s steps from a choice's likelihood to the grade, for one example:
  (log P(correct choices) under the model, unnormalised; P(correct) renormalised over the
  choices; the renormalised P of the most likely wrong choice). Correct: target score > 0."""
  logp = np.asarray(logps, np.float64)
  correct = np.asarray(target_scores, np.float64) > 0
  top = logp.max()
  log_correct = float(np.log(np.sum(np.exp(logp[correct] - top))) + top) if correct.any() \
      else -np.inf
  probs = np.exp(logp - top)
  probs /= probs.sum()
  wrong = probs[~correct]
  return log_correct, float(probs[correct].sum()), float(wrong.max()) if wrong.size else 0.0


def _multiple_choice(examples, choice_scores) -> dict:
  graded = [metrics.multiple_choice(logps, target_scores=[e.target_scores[o] for o in options])
            for e, (options, logps) in zip(examples, choice_scores)]
  confidence = [g.confidence for g in graded]
  correct = [g.correct for g in graded]
  table = metrics.reliability(confidence, correct, CALIBRATION_BINS)
  parts = np.array([_choice_mass(logps, [e.target_scores[o] for o in options])
                    for e, (options, logps) in zip(examples, choice_scores)])
  out = {"multiple_choice_grade": float(np.mean([g.grade for g in graded])),
         "mc_logprob_correct": float(parts[:, 0].mean()),
         "mc_p_correct": float(np.exp(parts[:, 0]).mean()),
         "mc_p_correct_renorm": float(parts[:, 1].mean()),
         "mc_p_wrong_max_renorm": float(parts[:, 2].mean()),
         "mc_brier": float(np.mean([g.brier for g in graded])),
         "ece": metrics.ece(confidence, correct, CALIBRATION_BINS),
         "chance": float(np.mean([1.0 / len(e.target_scores) for e in examples]))}
  for b in range(CALIBRATION_BINS):
    out[f"reliability_confidence_{b}"] = float(table.confidence[b])
    out[f"reliability_accuracy_{b}"] = float(table.accuracy[b])
    out[f"reliability_count_{b}"] = float(table.count[b])
  return out


def task_metrics(cfg, params, tasks: list[bigbench.Task], tokenizer, *,
                 edit_distance: bool = True, batch_size: int = 64) -> dict[str, dict[str, float]]:
  """{task or TASK_GROUP: {metric: value}} for every task of `tasks` (see the module docstring).
  Prompts are shown without appended choices: the study's models are trained on the bare
  questions."""
  plan = _Plan(tasks, tokenizer, edit_distance)
  scores = generate.score(cfg, params, plan.pairs, batch_size=batch_size)
  outputs = (generate.generate(cfg, params, plan.prompts, plan.max_new,
                               stop_token=plan.stop_token, batch_size=batch_size)
             if plan.prompts else [])
  out = {}
  for part in plan.parts:
    name, generative = part["task"].name, part["generative"]
    if generative:
      start, n = part["scored"], len(generative)
      task_scores = scores[start:start + n]
      task_outputs = (outputs[part["generated"]:part["generated"] + n] if edit_distance
                      else None)
      out[name] = _generative(task_scores, part["answers"], task_outputs)
      for group in sorted({e.group for e in generative if e.group}):
        index = [i for i, e in enumerate(generative) if e.group == group]
        out[f"{name}_{group}"] = _generative([task_scores[i] for i in index],
                                             [part["answers"][i] for i in index], None)
    if part["choice"]:
      choice_scores = [(options, [scores[start + i].logprob for i in range(len(options))])
                       for start, options in part["spans"]]
      out.setdefault(name, {}).update(_multiple_choice(part["choice"], choice_scores))
  return out


def evaluator(cfg, tasks: list[bigbench.Task], tokenizer, *, edit_distance: bool = True,
              batch_size: int = 64):
  """A training-loop evaluator: params -> {"TASK/METRIC": value} over `tasks`."""

  def evaluate(params) -> dict:
    results = task_metrics(cfg, params, tasks, tokenizer, edit_distance=edit_distance,
                           batch_size=batch_size)
    return {f"{name}/{metric}": value for name, values in results.items()
            for metric, value in values.items()}

  return evaluate


def _choice_scores(cfg, params, task, examples, tokenizer, batch_size: int, choices, shots=()):
  """Per example: (its choices, their log-likelihoods given the prompt)."""
  pairs, spans = [], []
  for e in examples:
    context = _encode(tokenizer, bigbench.prompt(task, e, shots, choices=choices))
    spans.append((len(pairs), list(e.target_scores)))
    pairs += [(context, _encode(tokenizer, option)) for option in e.target_scores]
  scores = generate.score(cfg, params, pairs, batch_size=batch_size)
  return [(options, [scores[start + i].logprob for i in range(len(options))])
          for start, options in spans]


def bigbench_scores(cfg, params, task: bigbench.Task, tokenizer, *, batch_size: int = 64,
                    shots=()) -> dict:
  """BIG-bench's metrics of `task` on the model, as BIG-bench computes them: exact_str_match
  (greedy output, cut at the stop string, then the output regex's first match, against any
  target) over generative examples; multiple_choice_grade over examples with target_scores
  (the prompt shows the choices when the task's append_choices_to_input says so)."""
  out = {"task": task.name, "examples": len(task.examples)}
  generative = [e for e in task.examples if e.target is not None]
  if generative and "exact_str_match" in task.metrics:
    prompts = [_encode(tokenizer, bigbench.prompt(task, e, shots)) for e in generative]
    longest = max(len(_encode(tokenizer, t)) for e in generative for t in e.targets)
    stop = _encode(tokenizer, task.stop_string) if task.stop_string else []
    outputs = generate.generate(cfg, params, prompts, min(cfg.context, longest + len(stop) + 8),
                                stop_token=stop[0] if len(stop) == 1 else None,
                                batch_size=batch_size)
    hits = []
    for e, o in zip(generative, outputs):
      text = bigbench.postprocess(task, tokenizer.decode(o))
      hits.append(float(any(text.strip() == t.strip() for t in e.targets)))
    out["exact_str_match"] = float(np.mean(hits))
    out["exact_str_match_examples"] = len(hits)
  choice = [e for e in task.examples if e.target_scores]
  if choice and "multiple_choice_grade" in task.metrics:
    grades = [metrics.multiple_choice(logps, target_scores=[e.target_scores[o] for o in options])
              for e, (options, logps) in zip(choice, _choice_scores(
                  cfg, params, task, choice, tokenizer, batch_size, None, shots))]
    out["multiple_choice_grade"] = float(np.mean([g.grade for g in grades]))
    out["multiple_choice_grade_examples"] = len(grades)
  return out
