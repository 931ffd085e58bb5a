"""Trade-off evaluator: sweep compression (and later DP, dropout) settings.

  ./bazelw run //tff_compress:tradeoff -- --config=configs/tradeoff.py
  ./bazelw run //tff_compress:tradeoff -- --config=configs/tradeoff_smoke.py \
      --sweep_dir=runs/my-sweep
"""

from __future__ import annotations

import os

from absl import flags

from tff_compress import cli

_CONFIG = cli.define_config_flag(
    os.path.join(os.path.dirname(__file__), '..', 'configs', 'tradeoff.py'))
_SWEEP_DIR = flags.DEFINE_string(
    'sweep_dir', None,
    'Sweep directory (default runs/<sweep name>-<hash>/ under the current '
    'directory). Re-running resumes: finished cells are not run again.')
_WORKERS = cli.define_workers_flag()


def _validate_sweep(sweep):
  """Top-level sweep keys only; cells are validated by `tradeoff_lib`."""
  from tff_compress import tradeoff_lib  # pylint: disable=g-import-not-at-top
  known = set(tradeoff_lib.default_sweep_config().keys())
  extra = set(sweep.keys()) - known
  if extra:
    raise cli.UserError(f'unknown sweep key {sorted(extra)[0]!r}; keys: '
                        f'{", ".join(sorted(known))}')
  return sweep


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f'unexpected arguments: {" ".join(argv[1:])}')
  sweep = cli.load_config(_CONFIG, validate=_validate_sweep)
  # pylint: disable=g-import-not-at-top
  import hashlib
  import json
  from tff_compress import config_lib
  from tff_compress import tradeoff_lib
  from tff_compress.data import federated_data
  from tff_compress.program import run_dir as run_dir_lib
  from tff_compress.runtime import errors as runtime_errors
  # pylint: enable=g-import-not-at-top
  try:
    base = config_lib.load_config_file(
        run_dir_lib.find_input_file(sweep.base))
  except config_lib.ConfigError as e:
    raise cli.UserError(f'sweep key \'base\': {e}') from e
  if _WORKERS.value is not None:  # every cell runs on these workers
    base.runtime.workers = _WORKERS.value
  if _SWEEP_DIR.value:
    sweep_dir = run_dir_lib.resolve_user_path(_SWEEP_DIR.value)
  else:
    identity = hashlib.sha256(json.dumps(
        [sweep.to_dict(), config_lib.identity(base)], sort_keys=True,
        default=str).encode()).hexdigest()[:10]
    sweep_dir = run_dir_lib.resolve_user_path(
        os.path.join('runs', f'{sweep.name}-{identity}'))
  try:
    tradeoff_lib.run_sweep(sweep, base, sweep_dir)
  except (tradeoff_lib.SweepError, run_dir_lib.RunDirError,
          federated_data.DataError, runtime_errors.WorkerUnavailableError) as e:
    hint = ('; re-run the same command to resume (finished cells are kept)'
            if isinstance(e, runtime_errors.WorkerLostError) else '')
    raise cli.UserError(f'{e}{hint}') from e


if __name__ == '__main__':
  cli.run_main('tradeoff', main, check_simulation_keys=False)
