"""Run ids are a hash of the resolved config, so a refactor that moves code must not move them:
every preset's id, and every run id of every sweep preset's plan, pinned in
tests/data/run_ids.json (written on main at 577b2ad, before the house was rebuilt; re-pinned on
2026-12-02 when every language-model config gained data.split_seed, issue 20: the held-out text
no longer follows the run's seed, which moved every LM preset's id and none of the diffusion's;
and again that day when the Chinchilla plan began counting its budgets as 6ND with N total,
sweep.budget_count, which moved the four chinchilla presets and their plans' step counts; and on
2026-12-03 when the Chinchilla and Kaplan sweep groups gained sweep.seeds, which moved their
presets' own ids and no run id of any plan; experiments/lr_corners.py's presets were added
then, and lr_transfer's sweep group gained sweep.variants, which moved its presets' own ids and
no run id of a plan; and again that day when the Chinchilla cpu / synthetic and Kaplan cpu
presets became the pre-registered v2 plans, results/PREREGISTRATION-scaling-v2.md, which moved
those three presets and their plans; and on 2026-12-07 when the emergence presets became v2's
(results/PREREGISTRATION-emergence-v2.md: its mixture, tasks.family_heldout, its ladder), which
moved the three emergence presets and their plans and nothing else; and when the accelerator
presets (lm gpu-124m, chinchilla gpu, kaplan gpu) moved to a 32k BPE over prepared shards, issue
26, which moved those three presets and their plans and nothing else; and on 2026-12-07 when
lm's byte-smoke and bpe-smoke presets were added, results/lm/bpe-smoke, which moved nothing).
A preset on a `prepared:DIR` source is pinned with its folder's identity fields blank, as on a
machine that has not prepared DIR: where DIR is prepared, its run id follows the folder's
manifest (research.recipes.lm.resolve), by design.

    python tests/test_run_ids.py     # prints today's ids as JSON (to compare, or to re-pin
                                     # after a change of config that is meant to move them)
"""

import json
import os
import sys


HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PINNED = os.path.join(HERE, "data", "run_ids.json")
STUDIES = ("lm", "chinchilla", "kaplan", "lr_transfer", "lr_corners", "emergence", "diffusion")


def current_ids() -> dict:
  """{"study:preset": {"id": run id of the preset, "plan": [run ids of its plan]}}."""
  from research import config as config_lib
  from research import study as study_lib
  out = {}
  for name in STUDIES:
    spec = os.path.join(REPO, "experiments", f"{name}.py")
    module = config_lib.load_module(spec)
    for preset in module.PRESETS:
      cfg, _ = config_lib.load(f"{spec}:{preset}")
      _without_local_data(cfg)
      entry = {"id": config_lib.run_id(cfg)}
      if study_lib.is_sweep(cfg):
        module.validate(cfg)
        entry["plan"] = [config_lib.run_id(run) for run in module.plan(cfg)]
      out[f"{name}:{preset}"] = entry
  return out


def _without_local_data(cfg) -> None:
  """Blanks what a prepared: source's config took from the folder on this machine."""
  from research.data import prepared
  if "data" in cfg and str(cfg.data.get("source", "")).startswith("prepared:"):
    for field in prepared.IDENTITY_FIELDS:
      cfg.data[field] = ""


def test_every_presets_run_ids_are_pinned():
  with open(PINNED) as f:
    pinned = json.load(f)
  now = current_ids()
  assert sorted(now) == sorted(pinned)
  for key, entry in pinned.items():
    assert now[key]["id"] == entry["id"], key
    assert now[key].get("plan") == entry.get("plan"), key
  assert sum(len(e.get("plan", ())) for e in pinned.values()) > 100


if __name__ == "__main__":
  sys.path.insert(0, REPO)
  json.dump(current_ids(), sys.stdout, indent=1)
  print()
