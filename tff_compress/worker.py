"""A remote TFF worker for multi-machine simulation (and its health check).

  ./bazelw run //tff_compress:worker -- --port=8000
  ./bazelw run //tff_compress:worker -- --port=8000 --data_dir=/srv/tff \
      --config=configs/caldas_mnist.py       # also prepare that run's data
  ./bazelw run //tff_compress:worker -- --config=configs/caldas_mnist.py \
      --prepare_only                          # only write the data, exit
  ./bazelw run //tff_compress:worker -- --check=10.0.0.2:8000,10.0.0.3:8000

Drivers connect with `simulate --workers=host:port,...`; see docs/DEPLOY.md.
"""

from __future__ import annotations

import os

from absl import flags

from tff_compress import cli

_CONFIG = cli.define_config_flag(None)
_PORT = flags.DEFINE_integer('port', None, 'TCP port to serve on.')
_DATA_DIR = flags.DEFINE_string(
    'data_dir', '',
    'Working directory of the worker; client data of the runs it serves is '
    'read from <data_dir>/client_data/ (default ~/.cache/tff_compress/worker,'
    ' the drivers\' default runtime.worker_data_dir).')
_PREPARE_ONLY = flags.DEFINE_boolean(
    'prepare_only', False,
    'Write the client data of --config under --data_dir and exit.')
_CHECK = flags.DEFINE_string(
    'check', '',
    'host:port,... : check that these workers run computations (and, with '
    '--config, read that run\'s client data), then exit 0; else exit 2.')
_TIMEOUT = flags.DEFINE_float(
    'timeout', 30.0, 'Seconds --check waits for each connection.')
_MAX_CALLS = flags.DEFINE_integer(
    'max_concurrent_computation_calls', -1,
    'Limit on parallel calls of one computation in the worker (<= 0: none); '
    'lower it if clients run out of memory.')


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f'unexpected arguments: {" ".join(argv[1:])}')
  config = cli.load_config(_CONFIG) if _CONFIG.value is not None else None
  # pylint: disable=g-import-not-at-top  (TensorFlow loads after validation)
  from tff_compress import config_lib
  from tff_compress import worker_lib
  from tff_compress.data import federated_data
  from tff_compress.data import store as store_lib
  from tff_compress.program import run_dir as run_dir_lib
  from tff_compress.runtime import settings as runtime_settings
  # pylint: enable=g-import-not-at-top
  settings = config_lib.settings(config) if config is not None else None
  data, seed = ((settings.data, settings.run.seed) if settings is not None
                else (None, 0))
  data_dir = store_lib.resolve_data_dir(
      run_dir_lib.resolve_user_path(_DATA_DIR.value) if _DATA_DIR.value
      else '')
  try:
    if _CHECK.value:
      try:
        targets = runtime_settings.parse_workers(_CHECK.value)
      except runtime_settings.WorkerAddressError as e:
        raise cli.UserError(f'--check: {e}') from e
      worker_lib.check(targets, _TIMEOUT.value, data, seed, data_dir)
      return
    if _PREPARE_ONLY.value and config is None:
      raise cli.UserError('--prepare_only needs --config=<simulation config>')
    if _PORT.value is None and not _PREPARE_ONLY.value:
      raise cli.UserError('--port is required (e.g. --port=8000)')
    os.makedirs(data_dir, exist_ok=True)
    if data is not None:
      worker_lib.prepare_data(data, seed, data_dir)
    if _PREPARE_ONLY.value:
      return
    code = worker_lib.serve(_PORT.value, data_dir, _MAX_CALLS.value)
  except (worker_lib.WorkerError, federated_data.DataError, OSError) as e:
    raise cli.UserError(str(e)) from e
  if code:
    raise SystemExit(code)


if __name__ == '__main__':
  cli.run_main('worker', main)
