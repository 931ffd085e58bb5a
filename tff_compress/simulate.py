"""The main job: one federated training run from a config.

  ./bazelw run //tff_compress:simulate
  ./bazelw run //tff_compress:simulate -- --config=configs/smoke.py \
      --config.rounds=5 --run_dir=runs/mine
"""

from __future__ import annotations

import os

from absl import flags

from tff_compress import cli

_CONFIG = cli.define_config_flag(
    os.path.join(os.path.dirname(__file__), '..', 'configs', 'caldas_mnist.py'))
_RUN_DIR = flags.DEFINE_string(
    'run_dir', None,
    'Run directory (default runs/<config name>-<config hash>/ under the '
    'current directory). Re-running with the same config resumes it.')
_WORKERS = cli.define_workers_flag()


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f'unexpected arguments: {" ".join(argv[1:])}')
  config = cli.with_workers(cli.load_config(_CONFIG), _WORKERS.value)
  # pylint: disable=g-import-not-at-top  (TensorFlow loads after validation)
  from tff_compress import config_lib
  from tff_compress import simulate_lib
  from tff_compress.data import federated_data
  from tff_compress.program import run_dir as run_dir_lib
  from tff_compress.runtime import errors as runtime_errors
  # pylint: enable=g-import-not-at-top
  if _RUN_DIR.value:
    run_dir = run_dir_lib.resolve_user_path(_RUN_DIR.value)
  else:
    run_dir = run_dir_lib.default_run_dir(config.name,
                                          config_lib.config_hash(config))
  try:
    simulate_lib.run(config, run_dir)
  except (run_dir_lib.RunDirError, federated_data.DataError) as e:
    raise cli.UserError(str(e)) from e
  except runtime_errors.WorkerLostError as e:
    raise cli.UserError(
        f'{e}; finished rounds are saved in {run_dir}: restart the worker '
        'and re-run the same command to resume') from e
  except runtime_errors.WorkerUnavailableError as e:  # unreachable at start
    raise cli.UserError(str(e)) from e


if __name__ == '__main__':
  cli.run_main('simulate', main)
