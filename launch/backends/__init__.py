"""Where a sweep's runs train: backends picked by name from one table, each a module with the
same entry points, so that another cluster (Ray, Kubernetes) would be one more file here.

A backend module provides:
  add_arguments(parser)             its command-line options (an argument group of launch sweep)
  check(args, record, states, threads) -> options
                                    its options, checked before anything is written (UserError)
  launch(args, record, options, workers, threads) -> exit code
                                    trains the runs that have not finished (research's worker
                                    function, launch.worker.execute, in whatever process the
                                    backend starts) and gets the study's analysis run
                                    (launch.plan.analyze)
  queue(workdir) -> {run id: (state, job id)}
                                    what its scheduler says of the sweep's runs ({} when the
                                    sweep was not submitted to it), for launch status
"""

import importlib

from research.errors import UserError

BACKENDS = {"local": "launch.backends.local", "slurm": "launch.backends.slurm"}


def get(name: str):
  if name not in BACKENDS:
    raise UserError(f"--backend {name!r} is unknown: choose one of {', '.join(BACKENDS)}")
  return importlib.import_module(BACKENDS[name])


def all_backends():
  return [importlib.import_module(module) for module in BACKENDS.values()]
