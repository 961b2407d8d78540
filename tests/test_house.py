"""The house's rules, checked: data flows one way (no import of experiments/ from the library or
the launcher, no import cycle), the loop's config groups are part of the study contract, each
config is validated once, and a run computes its schedule, reads its log and loads its data once.
"""

import ast
import os
import textwrap

import pytest

import sweep_helpers as sh
from launch.__main__ import main
from lm_helpers import REPO
from research import config as config_lib


def _imports(path: str) -> set[str]:
  """The modules a file imports, module-level and function-local alike."""
  with open(path) as f:
    tree = ast.parse(f.read())
  out = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      out.add(node.module)
      out.update(f"{node.module}.{alias.name}" for alias in node.names)
  return out


def _modules(package: str, packages: bool = True) -> dict[str, str]:
  """{dotted module name: path} under a top-level package (its __init__ files too, unless not
  `packages`)."""
  out = {}
  for root, _, files in os.walk(os.path.join(REPO, package)):
    for name in files:
      if name.endswith(".py") and (packages or name != "__init__.py"):
        path = os.path.join(root, name)
        module = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
        out[module.removesuffix(".__init__")] = path
  return out


def test_the_library_and_the_launcher_import_no_study():
  for package in ("research", "launch"):
    for module, path in _modules(package).items():
      bad = sorted(m for m in _imports(path) if m == "experiments" or m.startswith("experiments."))
      assert not bad, f"{module} imports {bad}"
  for module, path in _modules("research").items():
    assert not [m for m in _imports(path) if m.startswith("launch")], module


def cycles(graph: dict[str, set[str]]) -> list[str]:
  """The nodes of a directed graph that reach themselves."""

  def reach(start):
    seen, todo = set(), [start]
    while todo:
      for nxt in graph.get(todo.pop(), ()):
        if nxt not in seen:
          seen.add(nxt)
          todo.append(nxt)
    return seen

  return sorted(m for m in graph if m in reach(m))


def test_no_import_cycle_in_the_library_or_the_launcher():
  assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c"]
  modules = {}
  for package in ("research", "launch", "experiments"):
    modules.update(_modules(package, packages=False))
  graph = {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}
  assert len(graph) > 60 and graph["launch.backends.slurm"] >= {"launch.plan"}
  assert not cycles(graph)


def test_a_study_without_the_loops_groups_is_one_line_exit_2(tmp_path, capsys):
  study = tmp_path / "no_loop.py"
  study.write_text(textwrap.dedent(f"""
      import sys
      sys.path.insert(0, {os.path.join(REPO, 'tests')!r})
      from toy_study import *  # noqa: F401,F403
      import toy_study

      def get_config(preset):
        c = toy_study.get_config(preset)
        del c.loop
        return c
  """))
  assert main(["run", "--config", f"{study}:one", "--workdir", str(tmp_path / "run")]) == 2
  err = capsys.readouterr().err.strip()
  assert "config field 'loop' = None: missing" in err and len(err.splitlines()) == 1, err
  assert not (tmp_path / "run").exists()


def test_a_run_validates_once_and_reads_its_schedule_and_log_once(tmp_path, monkeypatch):
  from research import tracking
  from research.train import loop
  from research.train import run as run_lib
  cfg, toy = config_lib.load(f"{sh.TOY}:one")
  calls = {"validate": 0, "learning_rates": 0, "read_log": 0}

  def counted(name, fn):
    def wrapper(*args, **kwargs):
      calls[name] += 1
      return fn(*args, **kwargs)
    return wrapper

  monkeypatch.setattr(toy, "validate", counted("validate", toy.validate))
  monkeypatch.setattr(loop, "learning_rates", counted("learning_rates", loop.learning_rates))
  monkeypatch.setattr(tracking, "read_log", counted("read_log", tracking.read_log))
  s = run_lib.run(cfg, toy, str(tmp_path / "a"), log=lambda *a: None)
  assert s["status"] == "finished" and calls == {"validate": 1, "learning_rates": 1,
                                                 "read_log": 1}
  run_lib.run(cfg, toy, str(tmp_path / "b"), log=lambda *a: None, validated=True)  # a sweep's
  assert calls["validate"] == 1


def test_the_emergence_recipe_loads_its_text_once(monkeypatch):
  from research.recipes import lm as lm_recipe
  cfg, study = config_lib.load(os.path.join(REPO, "experiments", "emergence.py") + ":smoke")
  run = study.plan(cfg)[0]
  loads = []
  original = lm_recipe.load_data
  monkeypatch.setattr(lm_recipe, "load_data", lambda c: loads.append(1) or original(c))
  recipe = study.recipe(run)
  assert len(loads) == 1
  assert len(recipe.evaluators) == 2 and recipe.report.unit == "tokens"


@pytest.mark.parametrize("backend", ["local", "slurm"])
def test_backends_come_from_one_table_with_one_set_of_entry_points(backend):
  from launch import backends
  module = backends.get(backend)
  for name in ("add_arguments", "check", "launch", "queue"):
    assert callable(getattr(module, name)), (backend, name)
  with pytest.raises(Exception, match="--backend 'ray' is unknown"):
    backends.get("ray")
