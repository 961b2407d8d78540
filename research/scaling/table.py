"""Reading a table of runs and checking it: every bad value is named by column and row.

Rows are counted from 1 after the header (the line number in a CSV minus one; the line number in
a JSONL file). Columns give N and D, or N and C with D = C / (k N), k = 6 unless told otherwise.
"""

import dataclasses
import os

import numpy as np
import pandas as pd

from research.errors import UserError

READERS = {".csv": pd.read_csv, ".tsv": lambda p: pd.read_csv(p, sep="\t"),
           ".jsonl": lambda p: pd.read_json(p, lines=True), ".json": pd.read_json,
           ".parquet": pd.read_parquet, ".feather": pd.read_feather, ".pkl": pd.read_pickle,
           ".pickle": pd.read_pickle, ".xz": pd.read_pickle}


def read_table(path: str) -> pd.DataFrame:
  """A CSV, TSV, JSONL run log, JSON, Parquet, Feather or pickle file as a DataFrame."""
  if not os.path.isfile(path):
    raise UserError(f"table {path!r} does not exist")
  ext = os.path.splitext(path)[1].lower()
  reader = READERS.get(ext, pd.read_csv)
  try:
    df = reader(path)
  except Exception as e:  # pandas raises many types for a malformed file
    raise UserError(f"table {path!r} could not be read as {ext or 'CSV'}: {e}") from None
  if not isinstance(df, pd.DataFrame) or df.empty:
    raise UserError(f"table {path!r} has no rows")
  return df.reset_index(drop=True)


def expand_files(manifest: pd.DataFrame, column: str, base: str) -> pd.DataFrame:
  """A manifest's runs as one table: each row's file (column `column`, relative to `base`) read
  with read_table, the manifest row's other columns repeated on its rows (the file's own columns
  win), and the file named in column `run`."""
  if column not in manifest.columns:
    raise UserError(f"--files {column!r}: no such column; the manifest has "
                    f"{', '.join(map(repr, manifest.columns))}")
  parts = []
  for _, entry in manifest.iterrows():
    rows = read_table(os.path.join(base, str(entry[column])))
    shared = {key: value for key, value in entry.items() if key not in rows.columns}
    shared["run"] = str(entry[column])
    parts.append(pd.concat([rows.drop(columns="run", errors="ignore"),
                            pd.DataFrame(shared, index=rows.index)], axis=1))
  return pd.concat(parts, ignore_index=True)


@dataclasses.dataclass
class Runs:
  """Columns as float arrays: N parameters, D tokens, C FLOPs, L loss; U unique tokens if given."""
  N: np.ndarray
  D: np.ndarray
  C: np.ndarray
  L: np.ndarray
  rows: np.ndarray
  groups: np.ndarray
  U: np.ndarray | None = None
  conventions: dict = dataclasses.field(default_factory=dict)
  points: np.ndarray | None = None  # design point per row, where replicate seeds are known

  def subset(self, mask) -> "Runs":
    pick = lambda v: None if v is None else v[mask]
    return Runs(self.N[mask], self.D[mask], self.C[mask], self.L[mask], self.rows[mask],
                self.groups[mask], pick(self.U), self.conventions, pick(self.points))

  def replicates(self) -> dict | None:
    """{design_points, seeds_min, seeds_max}: how many runs each design point has; None when
    the table names no seed column."""
    if self.points is None:
      return None
    runs_per_point = {}
    for p, g in set(zip(self.points, self.groups)):
      runs_per_point[p] = runs_per_point.get(p, 0) + 1
    counts = list(runs_per_point.values())
    return dict(design_points=len(counts), seeds_min=min(counts), seeds_max=max(counts))

  def bootstrap_points(self) -> np.ndarray | None:
    """The design points a bootstrap resamples seeds within; None (resample the runs) when no
    point has two seeds, where resampling within points would change nothing."""
    info = self.replicates()
    return self.points if info and info["seeds_max"] >= 2 else None

  def inputs(self) -> dict:
    out = dict(N=self.N, D=self.D)
    if self.U is not None:
      out["U"] = self.U
    return out


def design_points(n_values, d_values, groups) -> np.ndarray:
  """A design-point id per row: runs (groups) of the same N and final D (to 4 digits in log10)
  are replicates of one point, differing only in their seed."""
  final_d = {}
  for g, d in zip(groups, d_values):
    final_d[g] = max(final_d.get(g, 0.0), d)
  return np.array([f"{np.log10(n):.4f}/{np.log10(final_d[g]):.4f}"
                   for n, g in zip(n_values, groups)])


def _rows_text(rows) -> str:
  rows = [int(r) for r in rows]
  shown = ", ".join(str(r) for r in rows[:10])
  return f"row{'s' if len(rows) > 1 else ''} {shown}" + (f" and {len(rows) - 10} more"
                                                          if len(rows) > 10 else "")


def _column(df: pd.DataFrame, name: str, role: str) -> np.ndarray:
  if name not in df.columns:
    raise UserError(f"column {name!r} ({role}) is not in the table; columns are: "
                    f"{', '.join(map(repr, df.columns))}")
  values = pd.to_numeric(df[name], errors="coerce").to_numpy(np.float64)
  rows = np.flatnonzero(~np.isfinite(values)) + 1
  if len(rows):
    raise UserError(f"column {name!r} ({role}) is missing, NaN or not a number at "
                    f"{_rows_text(rows)} (e.g. {df[name].iloc[rows[0] - 1]!r}); "
                    "every value must be a finite positive number")
  rows = np.flatnonzero(values <= 0) + 1
  if len(rows):
    raise UserError(f"column {name!r} ({role}) is not positive at {_rows_text(rows)} "
                    f"(e.g. {values[rows[0] - 1]!r}); every value must be > 0")
  return values


def runs_from_table(df: pd.DataFrame, *, n: str, loss: str, d: str | None = None,
                    c: str | None = None, unique: str | None = None, run: str | None = None,
                    seed: str | None = None, flops_per_param_token: float = 6.0,
                    n_convention: str = "as given") -> Runs:
  """Checked arrays from named columns; D = C / (k N) or C = k N D when one of them is absent.
  `seed`: the column of training seeds; runs that share N and D are then replicates of one design
  point, and a bootstrap resamples them within it (fit.resample_weights)."""
  if (d is None) == (c is None) and d is None:
    raise UserError("give the tokens column (--d) or the FLOPs column (--c); neither was given")
  n_values = _column(df, n, "N, parameters")
  l_values = _column(df, loss, "loss")
  k = float(flops_per_param_token)
  if d is not None:
    d_values = _column(df, d, "D, tokens")
    c_values = _column(df, c, "C, FLOPs") if c is not None else k * n_values * d_values
    flops_rule = f"C from column {c!r}" if c is not None else f"C = {k:g} N D"
  else:
    c_values = _column(df, c, "C, FLOPs")
    d_values = c_values / (k * n_values)
    flops_rule = f"C from column {c!r}"
  u_values = _column(df, unique, "U, unique tokens") if unique else None
  groups = (df[run].astype(str).to_numpy() if run is not None and run in df.columns
            else np.arange(len(df)))
  if run is not None and run not in df.columns:
    raise UserError(f"column {run!r} (run id) is not in the table; columns are: "
                    f"{', '.join(map(repr, df.columns))}")
  points = None
  if seed is not None:
    if seed not in df.columns:
      raise UserError(f"column {seed!r} (seed) is not in the table; columns are: "
                      f"{', '.join(map(repr, df.columns))}")
    points = design_points(n_values, d_values, groups)
  conventions = dict(N=f"column {n!r}, {n_convention} (no embedding correction applied)",
                     D=f"column {d!r}" if d is not None else f"C / ({k:g} N) (training FLOPs "
                     f"C = {k:g} N D)",
                     C=flops_rule, L=f"column {loss!r}, natural-log loss per token",
                     flops_per_param_token=k)
  return Runs(n_values, d_values, c_values, l_values, np.arange(1, len(df) + 1), groups,
              u_values, conventions, points)


def budgets(flops, tolerance_dex: float = 0.05) -> np.ndarray:
  """IsoFLOP budget ids: sorted log10 C split wherever the gap exceeds tolerance_dex."""
  log_c = np.log10(np.asarray(flops, np.float64))
  order = np.argsort(log_c)
  ids = np.empty(len(log_c), int)
  ids[order] = np.concatenate([[0], np.cumsum(np.diff(log_c[order]) > tolerance_dex)])
  return ids
