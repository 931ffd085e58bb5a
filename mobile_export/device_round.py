"""A federated round with real devices, one shell command per step.

  # 1. the server writes one broadcast message per slot of round 0
  ./bazelw run //mobile_export:device_round -- --run_dir=runs/X \\
      broadcast --round=0 --out_dir=/tmp/r0 --client_data
  # 2. each phone (here: the TF-free reference client) trains on its data
  ./bazelw run //mobile_export:device_client -- --model_dir=runs/X/tflite \\
      --broadcast=/tmp/r0/broadcast_0.bin --data=/tmp/r0/client_0.npz \\
      --out=/tmp/r0/update_0.bin          # ... for every slot
  # 3. the server aggregates what came back with the run's own aggregation
  ./bazelw run //mobile_export:device_round -- --run_dir=runs/X \\
      aggregate --round=0 --updates_dir=/tmp/r0

The run needs its TFLite export (//mobile_export:export) for the phones.
`broadcast` also writes slots.json: per slot, the client it stands for, its
tier and `model_folder`, the export folder of the trainer its phone runs
(device tiers: tflite/tier_<name>/, each slot gets its tier's slice).
State, metrics and per-device outcomes go to <run_dir>/device_rounds/ (see
device_round_lib.py). Mistakes — another round than the next one, a missing
directory, no updates — are one line on stderr and exit status 2; a bad
update message is not a mistake of the operator: its device is reported as
rejected, with the reason, and the round goes on.
"""

from __future__ import annotations

import sys

from absl import flags

from tff_compress import cli

_COMMANDS = ('broadcast', 'aggregate')
_RUN_DIR = flags.DEFINE_string(
    'run_dir', None, 'The run directory (from //tff_compress:simulate).')
_ROUND = flags.DEFINE_integer(
    'round', None, 'The device round (0-based); must be the next one.')
_OUT_DIR = flags.DEFINE_string(
    'out_dir', None,
    'broadcast: where broadcast_<slot>.bin and slots.json go.')
_CLIENT_DATA = flags.DEFINE_bool(
    'client_data', False,
    'broadcast: also write client_<slot>.npz, the examples of the client '
    'the simulation samples for each slot (for reference devices).')
_UPDATES_DIR = flags.DEFINE_string(
    'updates_dir', None, 'aggregate: the folder holding update_<slot>.bin.')
_MAX_WEIGHT = flags.DEFINE_float(
    'max_weight', 1e6,
    'aggregate: the largest aggregation weight (examples trained) a device '
    'may claim; larger claims are rejected.')


def main(argv):
  if len(argv) != 2 or argv[1] not in _COMMANDS:
    raise cli.UserError(
        f'give one command, {" or ".join(_COMMANDS)}; got '
        f'{" ".join(argv[1:]) or "none"}')
  command = argv[1]
  for name, holder in (('--run_dir', _RUN_DIR), ('--round', _ROUND)):
    if holder.value is None:
      raise cli.UserError(f'{name} is required')
  needed = {'broadcast': ('--out_dir', _OUT_DIR),
            'aggregate': ('--updates_dir', _UPDATES_DIR)}[command]
  if needed[1].value is None:
    raise cli.UserError(f'{command} needs {needed[0]}')
  # pylint: disable=g-import-not-at-top  (TensorFlow loads after the flags)
  from mobile_export import device_round_lib
  from mobile_export import export_lib
  from tff_compress.data import federated_data
  from tff_compress.program import run_dir as run_dir_lib
  from tff_compress.runtime import local as local_runtime
  # pylint: enable=g-import-not-at-top
  run_dir = run_dir_lib.resolve_user_path(_RUN_DIR.value)
  try:
    rounds = device_round_lib.DeviceRounds(run_dir, _MAX_WEIGHT.value)
    with local_runtime.local_context(
        log_dir=run_dir if command == 'aggregate' else None):
      if command == 'broadcast':
        rounds.broadcast(_ROUND.value,
                         run_dir_lib.resolve_user_path(_OUT_DIR.value),
                         client_data=_CLIENT_DATA.value, out=sys.stdout)
      else:
        rounds.aggregate(_ROUND.value,
                         run_dir_lib.resolve_user_path(_UPDATES_DIR.value),
                         out=sys.stdout)
  except (device_round_lib.DeviceRoundError, export_lib.ExportError,
          federated_data.DataError, OSError) as e:
    raise cli.UserError(str(e)) from e


if __name__ == '__main__':
  cli.run_main('device_round', main, check_simulation_keys=False)
