"""Exports a finished run to TFLite: trainer, int8 inference model, manifest.

  ./bazelw run //mobile_export:export -- --run_dir=runs/X
  ./bazelw run //mobile_export:export -- --run_dir=runs/X --prune_sparsity=0.5

Writes <run_dir>/tflite/{trainer.tflite, inference.tflite, manifest.json}
(or --out_dir), and for a run with device tiers (tiers.mix) the same three
files of each tier's model in tflite/tier_<name>/. A missing or unusable run directory is a one-line error
(exit status 2).
"""

from __future__ import annotations

from absl import flags

from tff_compress import cli

_RUN_DIR = flags.DEFINE_string(
    'run_dir', None, 'A finished run directory (from //tff_compress:simulate).')
_OUT_DIR = flags.DEFINE_string(
    'out_dir', None, 'Output directory (default <run_dir>/tflite).')
_PRUNE = flags.DEFINE_float(
    'prune_sparsity', 0.0,
    'Magnitude-prune this fraction of every kernel (tfmot) before the int8 '
    'conversion; 0 = no pruning. The accuracy cost is reported.')
_ALLOW_FLEX = flags.DEFINE_bool(
    'allow_flex', True,
    'If a layer has no builtin backward pass, export a Flex trainer (and '
    'say so in manifest.json) instead of failing.')
_MAX_BATCH = flags.DEFINE_integer(
    'max_batch_size', None,
    'Most rows a phone may pass to train (manifest.json); default: the '
    "run's client.batch_size, at least 32.")
_CALIBRATION = flags.DEFINE_integer(
    'calibration_examples', 256,
    'Training examples used to calibrate the int8 quantization.')


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not _RUN_DIR.value:
    raise cli.UserError('--run_dir is required (a directory written by '
                        '//tff_compress:simulate)')
  # pylint: disable=g-import-not-at-top  (TensorFlow loads after the flags)
  from tensorflow_federated.python.core.impl.context_stack import context_stack_impl
  from mobile_export import export_lib
  from tff_compress.runtime import local as local_runtime
  from tff_compress.data import federated_data
  from tff_compress.program import run_dir as run_dir_lib
  # pylint: enable=g-import-not-at-top
  # TFF's import-time default context holds an idle worker factory whose
  # destructor fails at interpreter exit; nothing here runs TFF.
  context_stack_impl.context_stack.set_default_context(
      local_runtime.closed_context())
  run_dir = run_dir_lib.resolve_user_path(_RUN_DIR.value)
  out_dir = (run_dir_lib.resolve_user_path(_OUT_DIR.value)
             if _OUT_DIR.value else None)
  try:
    export_lib.export(run_dir, out_dir, prune_sparsity=_PRUNE.value,
                      allow_flex=_ALLOW_FLEX.value,
                      calibration_examples=_CALIBRATION.value,
                      max_batch_size=_MAX_BATCH.value)
  except (export_lib.ExportError, federated_data.DataError) as e:
    raise cli.UserError(str(e)) from e


if __name__ == '__main__':
  cli.run_main('export', main, check_simulation_keys=False)
