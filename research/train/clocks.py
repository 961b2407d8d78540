"""Clocks and signals of a training process: a stop flag for SIGTERM / SIGINT, the seconds spent
compiling, and the units per second between logged steps."""

import signal
import time

COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                  "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")


class StopSignal:
  """Turns SIGTERM / SIGINT into a flag (`received`, the signal's name) checked between steps."""

  def __init__(self):
    self.received = None
    self.previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self.previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: leave signals alone
        pass
    return self

  def _handle(self, signum, frame):
    self.received = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, handler in self.previous.items():
      signal.signal(sig, handler)


class CompileClock:
  """Seconds this process spends tracing, lowering and compiling while the clock is open."""

  def __init__(self):
    self.seconds = 0.0

  def _listen(self, event: str, duration: float, **_) -> None:
    if event in COMPILE_EVENTS:
      self.seconds += duration

  def __enter__(self):
    import jax.monitoring
    jax.monitoring.register_event_duration_secs_listener(self._listen)
    return self

  def __exit__(self, *exc):
    import jax.monitoring
    jax.monitoring.unregister_event_duration_listener(self._listen)


class Throughput:
  """Units per second over the steps since the last logged one (the first step is not timed)."""

  def __init__(self):
    self.start, self.units, self.steps = None, 0.0, 0

  def add(self, units: float) -> None:
    if self.start is None:
      self.start, self.units, self.steps = time.perf_counter(), 0.0, 0
    else:
      self.units += units
      self.steps += 1

  def rate(self) -> float:
    elapsed = time.perf_counter() - self.start if self.start is not None else 0.0
    return self.units / elapsed if elapsed > 0 and self.steps else float("nan")

  def reset(self) -> None:
    self.start, self.units, self.steps = time.perf_counter(), 0.0, 0
