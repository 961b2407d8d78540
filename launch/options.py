"""Command-line options with checked domains, and a parser whose errors are one line.

Every numeric option of every command takes its type from here, so a value outside its domain
(`--bootstrap -5`, `--maxiter 0`, `--ci 1.5`, `--eta nan`) is refused before any work, in one line
and with exit code 2, like a bad config field:

    p = options.Parser(prog="python -m launch fit", description=...)
    p.add_argument("--bootstrap", type=options.integer(least=0), default=100)
    p.add_argument("--ci", type=options.number(0, 1, low_open=True, high_open=True))
"""

import argparse
import math

from research.errors import UserError


class Parser(argparse.ArgumentParser):
  """argparse whose errors raise UserError: `launch` prints them as one line, exit code 2
  (argparse's own would print the usage block first); --help still prints the usage."""

  def error(self, message):
    raise UserError(f"{self.prog}: {message} (see {self.prog} --help)")


def integer(least: int | None = None, most: int | None = None):
  """An argparse type: an int in [least, most] (either end may be open-ended: None)."""

  def parse(text: str) -> int:
    try:
      value = int(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if least is not None and value < least:
      raise argparse.ArgumentTypeError(f"{value}: must be at least {least}")
    if most is not None and value > most:
      raise argparse.ArgumentTypeError(f"{value}: must be at most {most}")
    return value

  parse.__name__ = "integer"  # argparse names the type in its messages
  return parse


def number(low: float = -math.inf, high: float = math.inf, *, low_open: bool = False,
           high_open: bool = False):
  """An argparse type: a finite float in [low, high] (`low_open` / `high_open`: that end
  excluded). NaN and infinities are always refused."""

  def parse(text: str) -> float:
    try:
      value = float(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if not math.isfinite(value) or below or above:
      domain = _interval(low, high, low_open, high_open)
      raise argparse.ArgumentTypeError(f"{value}: must be {domain}")
    return value

  parse.__name__ = "number"
  return parse


def _interval(low, high, low_open, high_open) -> str:
  if math.isinf(low) and math.isinf(high):
    return "a finite number"
  if math.isinf(high):
    return f"{'>' if low_open else '>='} {low:g}"
  if math.isinf(low):
    return f"{'<' if high_open else '<='} {high:g}"
  return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
