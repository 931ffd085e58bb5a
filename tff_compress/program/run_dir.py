"""The run directory: identity, resolved config, metrics and summaries.

Layout (see README):
  config.json     fully resolved config
  metrics.csv     one row per round, columns `METRICS_COLUMNS`
  summary.json    final figures
  curves.png      loss / accuracy / bytes per round
  personalization.csv, personalization.png
                  per-client fine-tuning evaluation (`TABLES`), if any
  tb/             TensorBoard event files
  checkpoints/    tff.program program state, one version per round
  final_weights.npz  trainable + non-trainable weights after the last round
"""

from __future__ import annotations

import csv
import json
import os
from typing import Mapping, Optional, Sequence


METRICS_COLUMNS = (
    'round', 'train_loss', 'train_accuracy', 'eval_loss', 'eval_accuracy',
    'bytes_down', 'bytes_up', 'client_flops', 'epsilon', 'clients',
    'round_seconds', 'zeroed',
    # Client faults (tff_compress/faults/): `clients` is the sampled count,
    # round_latency the simulated seconds until the round closed (empty
    # without a fault model), skipped 1 if too few reported.
    'clients_reported', 'clients_dropped', 'clients_late', 'round_latency',
    'skipped',
    # Personalization (personalization/evaluation.py), filled on evaluation
    # rounds: over the evaluation clients, mean / 10th / 90th percentile of
    # the per-client accuracy of the received model and of the fine-tuned
    # one on the client's own held-out part; share of clients fine-tuning
    # made strictly worse.
    'p13n_global_mean', 'p13n_global_p10', 'p13n_global_p90',
    'p13n_finetuned_mean', 'p13n_finetuned_p10', 'p13n_finetuned_p90',
    'p13n_worse_share',
)

# Device tiers (tff_compress/tiers/), per tier name: its clients taking part
# in the round, the bytes they received / sent, the mean training FLOPs per
# such client (empty if none), and its deployed model's evaluation.
TIER_COLUMNS = ('clients', 'bytes_down', 'bytes_up', 'client_flops',
                'eval_loss', 'eval_accuracy')


def tier_column(tier: str, figure: str) -> str:
  """`tier_<tier>_<figure>`, e.g. 'tier_low_eval_accuracy'."""
  return f'tier_{tier}_{figure}'


def tier_columns(tiers: Sequence[str]) -> tuple[str, ...]:
  """The `metrics.csv` columns a run with these tiers adds."""
  return tuple(tier_column(t, f) for t in tiers for f in TIER_COLUMNS)
# Per-round tables written beside metrics.csv (`<name>.csv`, the same resume
# semantics): name -> columns. An algorithm returns their rows in
# `RoundResult.tables`.
TABLES = {
    # One row per evaluation client and personalization evaluation.
    'personalization': (
        'round', 'client', 'train_examples', 'test_examples', 'global_loss',
        'global_accuracy', 'finetuned_loss', 'finetuned_accuracy'),
}


class RunDirError(ValueError):
  """The run directory cannot be used for this config."""


def default_run_dir(name: str, config_hash: str,
                    base: Optional[str] = None) -> str:
  """`<base>/runs/<config name>-<config hash>`; base = the user's cwd."""
  base = base or os.environ.get('BUILD_WORKING_DIRECTORY') or os.getcwd()
  return os.path.join(base, 'runs', f'{name}-{config_hash}')


def resolve_user_path(path: str) -> str:
  """Resolves a user-given path against the directory `bazel run` came from."""
  path = os.path.expanduser(path)
  if os.path.isabs(path):
    return path
  base = os.environ.get('BUILD_WORKING_DIRECTORY') or os.getcwd()
  return os.path.join(base, path)


def find_input_file(path: str) -> str:
  """An existing input file named by the user, or `path` if none matches.

  Relative paths are tried against the directory `bazel run` came from, then
  the workspace (for the repository's `configs/`), then the process cwd.
  """
  path = os.path.expanduser(path)
  if os.path.isabs(path):
    return path
  for base in (os.environ.get('BUILD_WORKING_DIRECTORY'),
               os.environ.get('BUILD_WORKSPACE_DIRECTORY'), os.getcwd()):
    if base and os.path.isfile(os.path.join(base, path)):
      return os.path.join(base, path)
  return path


class RunDir:
  """A run directory: checked when the run is set up, claimed when it starts.

  `RunDir(path, identity, title)` refuses a path that is not a directory
  and a directory holding another config's run, before anything is loaded
  or written. `claim()` creates the directory and writes `config.json`
  once the run has really started, so a start that fails leaves nothing
  that refuses the corrected command.

  Args:
    root: The directory.
    identity: The resolved config's identity (`config_lib.identity`, as a
      JSON-compatible dict): what `config.json` holds.
    title: Title of the run's plots.
  """

  def __init__(self, root: str, identity: Mapping, title: str = ''):
    self.root = root
    self.title = title
    self._wanted = json.loads(json.dumps(identity, sort_keys=True,
                                         default=str))
    if os.path.exists(root) and not os.path.isdir(root):
      raise RunDirError(f'run directory {root} exists and is not a directory;'
                        ' choose another --run_dir or omit it')
    self._existing = self._read_config()
    if self._existing is not None and self._existing != self._wanted:
      a, b = _flat(self._existing), _flat(self._wanted)
      diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
      raise RunDirError(
          f'{root} holds a run of a different config (differs in: '
          f'{", ".join(diff)}); choose another --run_dir or omit it')

  def path(self, name: str) -> str:
    return os.path.join(self.root, name)

  def _read_config(self) -> Optional[dict]:
    config_path = self.path('config.json')
    if not os.path.exists(config_path):
      return None
    try:
      with open(config_path) as f:
        return json.load(f)
    except json.JSONDecodeError as e:
      raise RunDirError(f'{config_path} is not valid JSON ({e})') from e
    except OSError as e:
      raise RunDirError(f'cannot read {config_path}: {e.strerror}') from e

  def claim(self) -> bool:
    """Creates the directory and its `config.json`; True if resuming."""
    if self._read_config() is not None:
      return True
    try:
      os.makedirs(self.root, exist_ok=True)
      config_path = self.path('config.json')
      tmp = config_path + '.tmp'
      with open(tmp, 'w') as f:
        json.dump(self._wanted, f, sort_keys=True, indent=2)
      os.replace(tmp, config_path)
    except OSError as e:
      raise RunDirError(f'cannot write run directory {self.root}: '
                        f'{e.strerror}') from e
    return False


def _flat(tree: Mapping, prefix: str = '') -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      out.update(_flat(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


class MetricsCsv:
  """`metrics.csv` that survives resume: rows past the checkpoint are dropped."""

  def __init__(self, path: str, columns: Sequence[str] = METRICS_COLUMNS):
    self._path = path
    self._columns = tuple(columns)

  def truncate_after(self, last_round: int) -> None:
    """Keeps rows with round <= last_round (the checkpoint being resumed)."""
    if not os.path.exists(self._path):
      return
    rows = self.read()
    kept = [r for r in rows if int(r['round']) <= last_round]
    self._write_all(kept)

  def read(self) -> list[dict[str, str]]:
    if not os.path.exists(self._path):
      return []
    with open(self._path, newline='') as f:
      return list(csv.DictReader(f))

  def _write_all(self, rows: Sequence[Mapping[str, object]]) -> None:
    tmp = self._path + '.tmp'
    with open(tmp, 'w', newline='') as f:
      writer = csv.DictWriter(f, fieldnames=self._columns)
      writer.writeheader()
      for row in rows:
        writer.writerow({k: row.get(k, '') for k in self._columns})
    os.replace(tmp, self._path)

  def append(self, row: Mapping[str, object]) -> None:
    unknown = set(row) - set(self._columns)
    if unknown:
      raise ValueError(f'unknown metrics columns {sorted(unknown)}')
    new = not os.path.exists(self._path)
    with open(self._path, 'a', newline='') as f:
      writer = csv.DictWriter(f, fieldnames=self._columns)
      if new:
        writer.writeheader()
      writer.writerow({k: _fmt(row.get(k)) for k in self._columns})


class Tables:
  """The run's per-round tables (`TABLES`), each a `MetricsCsv`.

  A table's file exists once a round has given it rows.
  """

  def __init__(self, root: str):
    self._root = root
    self._csv = {name: MetricsCsv(os.path.join(root, f'{name}.csv'), columns)
                 for name, columns in TABLES.items()}

  def truncate_after(self, last_round: int) -> None:
    for table in self._csv.values():
      table.truncate_after(last_round)

  def append(self, tables: Mapping[str, Sequence[Mapping[str, object]]]
             ) -> None:
    """Appends each table's rows; a name outside `TABLES` raises."""
    unknown = set(tables) - set(self._csv)
    if unknown:
      raise ValueError(f'unknown tables {sorted(unknown)}; known: '
                       f'{sorted(self._csv)}')
    for name, rows in tables.items():
      for row in rows:
        self._csv[name].append(row)

  def plot(self, title: str) -> None:
    """The tables' plots (`personalization.png`)."""
    path = os.path.join(self._root, 'personalization.csv')
    if os.path.exists(path):
      plot_personalization(path, os.path.join(self._root, 'metrics.csv'),
                           os.path.join(self._root, 'personalization.png'),
                           title)


def _fmt(value) -> str:
  if value is None:
    return ''
  if isinstance(value, float):
    return repr(value)
  return str(value)


def write_json(path: str, payload: Mapping[str, object]) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(payload, f, indent=2, sort_keys=True, default=float)
  os.replace(tmp, path)


def plot_curves(csv_path: str, png_path: str, title: str) -> None:
  """PNG of train/eval loss, accuracy and bytes per round."""
  # pylint: disable=g-import-not-at-top
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  # pylint: enable=g-import-not-at-top
  rows = MetricsCsv(csv_path).read()
  if not rows:
    return

  def series(key):
    pts = [(int(r['round']), float(r[key])) for r in rows if r.get(key)]
    return [p[0] for p in pts], [p[1] for p in pts]

  tiers = [c[len('tier_'):-len('_eval_accuracy')] for c in rows[0]
           if c.startswith('tier_') and c.endswith('_eval_accuracy')]
  fig, axes = plt.subplots(1, 4 if tiers else 3,
                           figsize=(20 if tiers else 15, 4))
  for key, style in (('train_loss', '-'), ('eval_loss', 'o-')):
    axes[0].plot(*series(key), style, label=key)
  axes[0].set_xlabel('round')
  axes[0].set_ylabel('loss')
  axes[0].legend()
  for key, style in (('train_accuracy', '-'), ('eval_accuracy', 'o-')):
    axes[1].plot(*series(key), style, label=key)
  axes[1].set_xlabel('round')
  axes[1].set_ylabel('accuracy')
  axes[1].legend()
  for key in ('bytes_down', 'bytes_up'):
    x, y = series(key)
    axes[2].plot(x, [v / 1e6 for v in y], label=key)
  axes[2].set_xlabel('round')
  axes[2].set_ylabel('MB per round (all sampled clients)')
  axes[2].legend()
  if tiers:
    axes[3].plot(*series('eval_accuracy'), 'o-', label='global model')
    for tier in tiers:
      axes[3].plot(*series(tier_column(tier, 'eval_accuracy')), 'o-',
                   label=f'tier {tier}')
    axes[3].set_xlabel('round')
    axes[3].set_ylabel('eval accuracy of the deployed model')
    axes[3].legend()
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(png_path, dpi=80)
  plt.close(fig)


def plot_personalization(table_path: str, metrics_path: str, png_path: str,
                         title: str) -> None:
  """PNG of the fine-tuning evaluation (`personalization.csv`).

  Left: each evaluation client's accuracy on its held-out part, received
  model vs fine-tuned, at the last evaluation (above the diagonal =
  fine-tuning helped). Middle: the same accuracies sorted (the
  distribution). Right: mean and 10th-90th percentile band per evaluation
  round (`metrics.csv`).
  """
  # pylint: disable=g-import-not-at-top
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  import numpy as np
  # pylint: enable=g-import-not-at-top
  rows = MetricsCsv(table_path, TABLES['personalization']).read()
  if not rows:
    return
  last = max(int(r['round']) for r in rows)
  final = [r for r in rows if int(r['round']) == last]
  g = np.array([float(r['global_accuracy']) for r in final])
  f = np.array([float(r['finetuned_accuracy']) for r in final])
  fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
  ax = axes[0]
  ax.plot([0, 1], [0, 1], color='0.6', linewidth=1)
  ax.scatter(g, f, s=18, alpha=0.7)
  ax.set_xlabel('received model accuracy (own held-out part)')
  ax.set_ylabel('fine-tuned accuracy')
  ax.set_title(f'per client, after round {last} '
               f'({100 * np.mean(f < g):.0f} % worse)')
  ax.set_xlim(-0.02, 1.02)
  ax.set_ylim(-0.02, 1.02)
  ax = axes[1]
  share = (np.arange(len(g)) + 1) / len(g)
  ax.step(np.sort(g), share, where='post', label=f'received (mean {g.mean():.3f})')
  ax.step(np.sort(f), share, where='post',
          label=f'fine-tuned (mean {f.mean():.3f})')
  ax.set_xlabel('per-client accuracy')
  ax.set_ylabel('share of evaluation clients at or below')
  ax.legend(loc='upper left')
  ax = axes[2]
  evaluated = [r for r in MetricsCsv(metrics_path).read()
               if r.get('p13n_global_mean')]
  x = [int(r['round']) for r in evaluated]
  for name, label in (('global', 'received'), ('finetuned', 'fine-tuned')):
    mean = [float(r[f'p13n_{name}_mean']) for r in evaluated]
    lo = [float(r[f'p13n_{name}_p10']) for r in evaluated]
    hi = [float(r[f'p13n_{name}_p90']) for r in evaluated]
    ax.plot(x, mean, 'o-', label=f'{label} mean')
    ax.fill_between(x, lo, hi, alpha=0.2, label=f'{label} p10-p90')
  ax.set_xlabel('round')
  ax.set_ylabel('per-client accuracy')
  ax.legend(loc='lower right')
  for a in axes:
    a.grid(alpha=0.3)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(png_path, dpi=80)
  plt.close(fig)
