"""The synthetic language: a random k-th order Markov chain with an exact entropy rate.

Transition rows P(. | last k symbols) over S symbols, from `chain_seed`, in one of two forms:
`dirichlet` (the default), each row drawn from a symmetric Dirichlet(alpha) (small alpha: sparse,
low-entropy rows; the lower orders then carry almost no information, so a model has nothing to
learn until it finds the whole k-th order table), or `loglinear`, logits summed over the suffixes
of the context, sum_j scale decay^(j-1) Z_j[last j symbols, next], Z_j standard normal: every
order adds information (graded, as in a back-off n-gram model), so a model's loss falls as it
learns longer contexts, and the S^k x S table outgrows small models. Symbol s is byte
SYMBOL_OFFSET + s.
The entropy rate is H = sum_s pi(s) H(P(. | s)) nats/token, pi the stationary distribution over
the S^k states; sequences start from pi, so every position of a sample is stationary.
"""

import dataclasses
import math

import numpy as np

from research.errors import UserError

SYMBOL_OFFSET = 33  # '!': symbols are printable ASCII first
MAX_SYMBOLS = 256 - SYMBOL_OFFSET
MAX_STATES = 2**20
MAX_TABLE = 2**24  # transition-table entries, S^(k+1)
DEFAULTS = {"order": 2, "symbols": 16, "alpha": 0.1, "chain_seed": 0, "form": "dirichlet",
            "scale": 2.0, "decay": 0.7}
_KINDS = {"order": int, "symbols": int, "alpha": float, "chain_seed": int, "form": str,
          "scale": float, "decay": float}
FORMS = ("dirichlet", "loglinear")
_TRAIN_DOMAIN, _VAL_DOMAIN = 1, 2  # RNG seed domains: training and validation never share draws
_VAL_BLOCK = 64  # validation rows are drawn in blocks, so fewer batches are a prefix of more


def _error(spec: str, what: str) -> UserError:
  return UserError(f"data source {spec!r}: {what}; allowed: 'synthetic:' followed by "
                   "comma-separated key=value among order (int, 0..), symbols (int, 2.."
                   f"{MAX_SYMBOLS}), alpha (float > 0), chain_seed (int >= 0), form "
                   f"({' or '.join(FORMS)}), scale (float > 0) and decay (float in (0, 1]) of "
                   "the loglinear form, with "
                   f"symbols**order <= {MAX_STATES:,} states and symbols**(order+1) <= "
                   f"{MAX_TABLE:,} transitions; defaults {DEFAULTS}")


def parse(spec: str, rest: str) -> dict:
  """Parameters of `synthetic:k=v,...` with defaults; UserError names a bad key or value."""
  params = dict(DEFAULTS)
  for item in filter(None, (s.strip() for s in rest.split(","))):
    key, eq, value = item.partition("=")
    key = key.strip()
    if not eq or key not in _KINDS:
      raise _error(spec, f"unknown parameter {item!r}")
    try:
      params[key] = _KINDS[key](value)
    except ValueError:
      raise _error(spec, f"{key}={value!r} is not a {_KINDS[key].__name__}") from None
  order, symbols, alpha = params["order"], params["symbols"], params["alpha"]
  if order < 0 or not 2 <= symbols <= MAX_SYMBOLS:
    raise _error(spec, f"order={order}, symbols={symbols} out of range")
  if not (alpha > 0 and math.isfinite(alpha)) or params["chain_seed"] < 0:
    raise _error(spec, f"alpha={alpha}, chain_seed={params['chain_seed']} out of range")
  if params["form"] not in FORMS:
    raise _error(spec, f"form={params['form']!r} is not one of {', '.join(FORMS)}")
  if not (params["scale"] > 0 and math.isfinite(params["scale"]) and 0 < params["decay"] <= 1):
    raise _error(spec, f"scale={params['scale']}, decay={params['decay']} out of range")
  if symbols**order > MAX_STATES or symbols**(order + 1) > MAX_TABLE:
    raise _error(spec, f"symbols**order = {symbols}**{order} = {symbols**order:,} states is "
                 "too many")
  return params


@dataclasses.dataclass(frozen=True, eq=False)
class Chain:
  """A k-th order chain: state index = last k symbols in base S, most recent last."""

  order: int
  symbols: int
  alpha: float
  chain_seed: int
  form: str
  scale: float
  decay: float
  probs: np.ndarray = dataclasses.field(repr=False)  # [S^k, S] transition rows
  stationary: np.ndarray = dataclasses.field(repr=False)  # [S^k]
  entropy_rate: float  # nats/token
  cdf: np.ndarray = dataclasses.field(repr=False)  # [S^k * S] row r's CDF shifted to (r, r+1]
  start_cdf: np.ndarray = dataclasses.field(repr=False)  # [S^k] CDF of pi

  @property
  def n_states(self) -> int:
    return self.symbols**self.order

  def conditional_entropies(self) -> list[float]:
    """H(X_{c+1} | X_1..X_c) in nats for context lengths c = 0..order (the last is the rate)."""
    blocks = [0.0] + [_entropy(self._marginal(m)) for m in range(1, self.order + 1)]
    return [float(b - a) for a, b in zip(blocks[:-1], blocks[1:])] + [self.entropy_rate]

  def _marginal(self, m: int) -> np.ndarray:
    """Stationary distribution of m consecutive symbols (m <= order)."""
    return self.stationary.reshape(self.symbols**(self.order - m), -1).sum(axis=0)

  def loss_floor(self, seq_len: int) -> float:
    """The best possible mean loss over seq_len targets whose t-th target sees t tokens."""
    return loss_floor(self.conditional_entropies(), seq_len)

  def sample(self, rng: np.random.Generator, count: int, length: int) -> np.ndarray:
    """uint8 [count, length] bytes of stationary sequences, vectorised over rows."""
    state = np.minimum(np.searchsorted(self.start_cdf, rng.random(count), side="right"),
                       self.n_states - 1)
    u = rng.random((length, count))
    out = np.empty((length, count), np.int64)
    for t in range(length):  # index = state * S + next symbol; the next state is index % S^k
      index = np.searchsorted(self.cdf, state + u[t], side="right")
      out[t], state = index, index % self.n_states
    return (out.T % self.symbols + SYMBOL_OFFSET).astype(np.uint8)

  def log_likelihood(self, data: np.ndarray) -> np.ndarray:
    """Log-probabilities of data[:, order:] given the preceding symbols, [rows, length - order]."""
    x = np.asarray(data, np.int64) - SYMBOL_OFFSET
    state = np.zeros(x.shape[0], np.int64)
    for t in range(self.order):
      state = state * self.symbols + x[:, t]
    logp = np.empty((x.shape[0], x.shape[1] - self.order))
    for t in range(self.order, x.shape[1]):
      logp[:, t - self.order] = np.log(self.probs[state, x[:, t]])
      state = (state * self.symbols + x[:, t]) % self.n_states
    return logp

  def describe(self) -> dict:
    return {"order": self.order, "symbols": self.symbols, "alpha": self.alpha,
            "chain_seed": self.chain_seed, "form": self.form, "scale": self.scale,
            "decay": self.decay, "states": self.n_states,
            "symbol_bytes": [SYMBOL_OFFSET, SYMBOL_OFFSET + self.symbols - 1],
            "entropy_rate_nats": self.entropy_rate,
            "entropy_rate_bits": self.entropy_rate / math.log(2),
            "conditional_entropies_nats": self.conditional_entropies()}


def loss_floor(conditional_entropies, seq_len: int) -> float:
  """The best mean loss over seq_len targets, the t-th seeing t tokens of context, from
  H(X_{c+1} | X_1..X_c) for c = 0..k (`Chain.conditional_entropies`, or a run's record of it)."""
  h = list(conditional_entropies)
  return float(np.mean([h[min(t, len(h) - 1)] for t in range(1, seq_len + 1)]))


def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
  """Shannon entropy in nats along `axis`, with 0 log 0 = 0."""
  return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=axis)


def stationary_distribution(probs: np.ndarray, symbols: int, tol: float = 1e-11,
                            max_iter: int = 20_000) -> np.ndarray:
  """pi = pi P for the chain on S^k states, by power iteration (lazy after 1000 steps, so
  that periodic chains converge too)."""
  n = probs.shape[0]
  rows = probs.reshape(symbols, n // symbols, symbols)  # [oldest symbol, middle, next symbol]
  pi = np.full(n, 1.0 / n)
  for i in range(max_iter):
    new = np.einsum("aj,ajx->jx", pi.reshape(symbols, -1), rows).ravel()
    if i >= 1000:
      new = 0.5 * (pi + new)
    new /= new.sum()
    if np.abs(new - pi).sum() < tol:
      return new
    pi = new
  return pi  # converged to within the last step; good to far better than the sampling noise


def _loglinear_rows(rng, order: int, symbols: int, scale: float, decay: float) -> np.ndarray:
  """softmax over the next symbol of sum_j scale decay^(j-1) Z_j[last j symbols], j = 1..k
  (a state's last j symbols are its index mod S^j: the most recent symbol is the last digit)."""
  states = np.arange(symbols**order)
  logits = np.zeros((len(states), symbols))
  for j in range(1, order + 1):
    table = rng.standard_normal((symbols**j, symbols))
    logits += scale * decay ** (j - 1) * table[states % symbols**j]
  logits -= logits.max(axis=1, keepdims=True)
  return np.exp(logits)


def make_chain(order: int, symbols: int, alpha: float, chain_seed: int, form: str = "dirichlet",
               scale: float = 2.0, decay: float = 0.7) -> Chain:
  """The chain with these parameters; the same parameters always give the same language."""
  if form == "dirichlet":
    rng = np.random.default_rng([chain_seed, order, symbols])
    probs = rng.dirichlet(np.full(symbols, alpha), size=symbols**order)
  else:
    rng = np.random.default_rng([chain_seed, order, symbols, 1])
    probs = (_loglinear_rows(rng, order, symbols, scale, decay) if order else
             np.exp(scale * rng.standard_normal((1, symbols))))
  probs /= probs.sum(axis=1, keepdims=True)
  pi = np.ones(1) if order == 0 else stationary_distribution(probs, symbols)
  rate = float(pi @ _entropy(probs))
  cdf = np.cumsum(probs, axis=1) + np.arange(len(probs))[:, None]
  cdf[:, -1] = np.arange(1, len(probs) + 1)
  start_cdf = np.cumsum(pi)
  start_cdf[-1] = np.inf
  arrays = (probs, pi, cdf.ravel(), start_cdf)
  for array in arrays:
    array.flags.writeable = False
  return Chain(order, symbols, alpha, chain_seed, form, scale, decay, arrays[0], arrays[1], rate,
               *arrays[2:])


def from_spec(spec: str, rest: str) -> Chain:
  return make_chain(**parse(spec, rest))


@dataclasses.dataclass(frozen=True)
class ChainSource:
  """Training rows fresh per step from an RNG seeded by (seed, step); validation separately."""

  chain: Chain

  def train_rows(self, seed: int, start: int, count: int, length: int) -> np.ndarray:
    rng = np.random.default_rng([seed, _TRAIN_DOMAIN, start, count, length])
    return self.chain.sample(rng, count, length)

  def val_rows(self, seed: int, count: int, length: int) -> np.ndarray:
    blocks = [self.chain.sample(np.random.default_rng([seed, _VAL_DOMAIN, length, b]),
                                _VAL_BLOCK, length) for b in range(-(-count // _VAL_BLOCK))]
    return np.concatenate(blocks)[:count]
