"""The run directory: identity, resolved config, metrics and summaries.

Layout (see README):
  config.json     fully resolved config
  metrics.csv     one row per round, columns `METRICS_COLUMNS`
  summary.json    final figures
  curves.png      loss / accuracy / bytes per round
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
)


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

  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
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
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(png_path, dpi=80)
  plt.close(fig)
