"""Run directory -> trainer.tflite, int8 inference.tflite and manifest.json.

Library code: no flags. `export.py` parses flags and calls :func:`export`.

* trainer.tflite: the on-device trainer (`trainer.py`) built from the run's
  model definition (`model_registry.build_model`, the Federated Dropout
  submodel's widths when dropout is configured), initialised with the run's
  final weights, with the run's local optimizer, batch size and codecs;
  converted with TFLite builtin ops only. A model with a layer that has no
  builtin backward pass falls back to Flex (`allow_flex`), loudly.
* inference.tflite: post-training full-integer (int8) quantization of the
  same model (float32 input/output), calibrated on training examples;
  optionally magnitude-pruned first (tfmot), with its accuracy cost.
* manifest.json: signatures (what each does, tensor names/shapes/dtypes),
  the batch rules (`max_batch_size`, `round.train_rows`) and the client
  round's steps (`round.steps`), the payload layout of every
  broadcast/update entry, codec settings, submodel shapes, ops used,
  whether Flex is needed, file sizes and measured accuracies.
* Device tiers (`tiers.mix`): the same three files per tier in
  `tier_<name>/`, of the tier's model (its widths and activation scales,
  holding the units a phone of the tier deploys): the tier's phones train
  its trainer.tflite and run its inference.tflite. The top manifest.json
  lists the tiers (`tiers`: widths, folder, sizes, parameters, accuracies).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Any, Optional, TextIO

import ml_collections
import numpy as np
import tensorflow as tf

from mobile_export import convert
from mobile_export import layers as layers_lib
from mobile_export import trainer as trainer_lib
from tff_compress import config_lib
from tff_compress.data import registry as data_registry
from tff_compress.dropout import submodel as submodel_lib
from tff_compress.models import registry as model_registry
from tff_compress.program import run_dir as run_dir_lib
from tff_compress.pruning import compact as compact_lib
from tff_compress.tiers import settings as tier_settings
from tff_compress.tiers import slicing as tier_slicing

# 2: `train` takes 1..max_batch_size rows (format 1: exactly batch_size).
MANIFEST_FORMAT = 2

# The default maximum rows per `train` call: the run's batch size, but at
# least Flower's Android default (min(32, local examples) per call).
MIN_DEFAULT_MAX_BATCH = 32

# What each signature does, for manifest.json (the Android README has the
# Kotlin calls). B = rows, 1..max_batch_size for train, any for infer.
SIGNATURE_DOCS = {
    'train': 'One SGD(M) step. x float32 [B, *input_shape], y int32 [B], '
             '1 <= B <= max_batch_size; rows labelled -1 are ignored. '
             'Returns loss: the mean cross-entropy over the other rows '
             '(the update is that mean\'s gradient, as TF computes for a '
             'batch of those rows).',
    'infer': 'Logits float32 [B, num_classes] of x float32 [B, '
             '*input_shape], any B.',
    'parameters': 'The weights a0..aN (Keras order, shapes in "weights").',
    'restore': 'Sets the weights to a0..aN and starts a new local round '
               '(resets the momentum); returns them.',
    'load_broadcast': 'Decodes a broadcast (round, seed, t<i>_<entry> as '
                      'in "broadcast_tensors"), sets the weights to the '
                      'result and starts a new local round; returns the '
                      'decoded a0..aN, the reference of the update.',
    'encode_update': 'Encodes the update u_i = received a_i - trained a_i '
                     'of round "round" with the uplink codec; returns seed '
                     'and t<i>_<entry> as in "update_tensors".',
}


class ExportError(ValueError):
  """The run directory cannot be exported (message says why)."""


def load_run(run_dir: str):
  """(config, weights list) of a finished run directory."""
  if not os.path.isdir(run_dir):
    raise ExportError(f'run directory not found: {run_dir}')
  config_path = os.path.join(run_dir, 'config.json')
  if not os.path.isfile(config_path):
    raise ExportError(f'{run_dir} is not a run directory (no config.json)')
  try:
    with open(config_path) as f:
      saved = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ExportError(f'{config_path} is not valid JSON ({e})') from e
  try:
    # Keys added to the project after the run was made take their defaults
    # (every new capability defaults to off).
    config = config_lib.validate(_merged(config_lib.default_config(), saved))
  except config_lib.ConfigError as e:
    raise ExportError(f'{config_path}: {e}') from e
  weights_path = os.path.join(run_dir, 'final_weights.npz')
  if not os.path.isfile(weights_path):
    raise ExportError(f'{run_dir} has no final_weights.npz (the run has not '
                      'finished; re-run the same simulate command)')
  try:
    with np.load(weights_path) as npz:
      weights = [npz[f'arr_{i}'] for i in range(len(npz.files))]
  except (OSError, ValueError, KeyError) as e:
    raise ExportError(f'{weights_path} is unreadable ({e})') from e
  return config, weights


def _merged(config: ml_collections.ConfigDict, saved, prefix=''):
  if not isinstance(saved, dict):
    raise config_lib.ConfigError(f'config section {prefix!r} is not a dict')
  for key, value in saved.items():
    if key not in config:
      raise config_lib.ConfigError(f'unknown config key {prefix + key!r}')
    if isinstance(config[key], ml_collections.ConfigDict):
      _merged(config[key], value, f'{prefix}{key}.')
    else:
      config[key] = value
  return config


def dropout_plan(config, model: tf.keras.Model
                 ) -> Optional[submodel_lib.SubmodelPlan]:
  """The Federated Dropout submodel plan of `dropout.*`, or None (the
  simulation's rule, `submodel.plan_for`)."""
  try:
    return submodel_lib.plan_for(model, config_lib.settings(config).dropout)
  except submodel_lib.SubmodelError as e:
    raise ExportError(str(e)) from e


def build_keras_model(config, input_shape, num_classes, widths=None,
                      scales=None):
  kwargs = {'seed': config.seed}
  if widths:
    kwargs['widths'] = dict(widths)
  if scales:
    kwargs['scales'] = dict(scales)
  return model_registry.build_model(config.model.name, input_shape,
                                    num_classes, **kwargs)


def signature_details(model: bytes) -> dict:
  """Per signature: what it does, and its tensors' names/shapes/dtypes.

  A shape entry -1 is a dimension the caller chooses (the batch).
  """
  interpreter = tf.lite.Interpreter(model_content=model)
  out = {}
  for key in sorted(interpreter.get_signature_list()):
    runner = interpreter.get_signature_runner(key)
    out[key] = {
        side: {name: {'shape': [int(d) for d in detail['shape_signature']],
                      'dtype': np.dtype(detail['dtype']).name}
               for name, detail in sorted(details.items())}
        for side, details in (('inputs', runner.get_input_details()),
                              ('outputs', runner.get_output_details()))}
    if key in SIGNATURE_DOCS:
      out[key]['doc'] = SIGNATURE_DOCS[key]
  return out


def _round_protocol(batch_size: int, max_batch_size: int,
                    epochs: int) -> dict:
  """The client round and the batch rules, as manifest.json states them."""
  return {
      'train_rows': {
          'min': 1, 'max': max_batch_size, 'ignored_label': -1,
          'loss': 'mean over the rows with a label >= 0: a short batch is '
                  'passed as it is, no padding',
          'above_max_or_wrong_shape': 'rejected by the host before the '
                                      'call (DeviceTrainer.train)'},
      'steps': [
          'parse the broadcast message against broadcast_tensors',
          'load_broadcast(round, seed, t<i>_<entry>...) -> a0..aN: keep '
          'them as the received weights',
          f'{epochs} epoch(s): shuffle the local examples, train(x, y) on '
          f'consecutive batches of {batch_size} rows, the last one shorter',
          'parameters() -> trained a0..aN; u_i = received a_i - trained '
          'a_i (float32); if any u_i is not finite, send zeros with weight '
          '0',
          'encode_update(round, u0..uN) -> seed, t<i>_<entry>...; pack them '
          'with weight = epochs x local examples into the update message',
      ],
  }


def tensor_layout(specs, shapes, names, io_key):
  """Per weight tensor: its payload entries and their signature tensor
  names (`io_key` 'input' for the broadcast, 'output' for the update)."""
  out = []
  for i, (spec, shape) in enumerate(zip(specs, shapes)):
    out.append({
        'index': i,
        'weight': names[i],
        'shape': list(shape),
        'elements': int(np.prod(shape)),
        'entries': [{'key': key, io_key: trainer_lib.entry_name(i, key),
                     'dtype': np.dtype(dtype).name, 'count': int(count)}
                    for key, (dtype, count) in spec.items()],
    })
  return out


def _accuracy_tflite(model: bytes, x: np.ndarray, y: np.ndarray) -> float:
  interpreter = tf.lite.Interpreter(model_content=model)
  infer = interpreter.get_signature_runner()
  correct = 0
  for a in range(0, len(y), 100):
    logits = infer(x=x[a:a + 100])['logits']
    correct += int((np.argmax(logits, 1) == y[a:a + 100]).sum())
  return correct / len(y)


def _accuracy_keras(model: tf.keras.Model, x, y) -> float:
  logits = model.predict(x, batch_size=100, verbose=0)
  return float((np.argmax(logits, 1) == y).mean())


def inference_model(keras_model: tf.keras.Model, calibration: np.ndarray,
                    int8: bool = True) -> bytes:
  """infer(x) -> logits as TFLite: float, or full-integer int8 (float I/O)."""
  module = tf.Module()
  module.model = keras_model
  module.infer = tf.function(
      lambda x: {'logits': keras_model(x, training=False)},
      input_signature=[tf.TensorSpec([None, *keras_model.input_shape[1:]],
                                     tf.float32, 'x')])
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [module.infer.get_concrete_function()], module)
  if int8:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]

    def representative():
      for row in calibration:
        yield {'x': row[None]}

    converter.representative_dataset = representative
  return converter.convert()


def prune(keras_model: tf.keras.Model, sparsity: float,
          x: np.ndarray) -> tf.keras.Model:
  """One-shot magnitude pruning (tfmot) of every Conv2D/Dense kernel.

  tfmot's `prune_low_magnitude` with a constant target sparsity, masks
  computed by one pruning step (a zero-learning-rate pass over one batch:
  the masks depend on weight magnitudes only), then `strip_pruning`. No
  fine-tuning: in federated learning the server holds no training data, so
  the reported accuracy cost is that of pruning alone.
  """
  # pylint: disable=g-import-not-at-top
  import tensorflow_model_optimization as tfmot
  # pylint: enable=g-import-not-at-top
  schedule = tfmot.sparsity.keras.ConstantSparsity(sparsity, begin_step=0,
                                                   frequency=1)
  pruned = tfmot.sparsity.keras.prune_low_magnitude(
      keras_model, pruning_schedule=schedule)
  pruned.compile(optimizer=tf.keras.optimizers.SGD(0.0),
                 loss=tf.keras.losses.SparseCategoricalCrossentropy(
                     from_logits=True))
  pruned.fit(x[:32], np.zeros([min(32, len(x))], np.int32), epochs=1,
             batch_size=32, verbose=0,
             callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
  return tfmot.sparsity.keras.strip_pruning(pruned)


@dataclasses.dataclass(frozen=True)
class DeviceModel:
  """One class of phones: the model it trains and the model it runs.

  Attributes:
    trainer_model: The Keras architecture the phone trains (trainer.tflite).
    trainer_weights: Its initial weights, Keras order.
    inference_model: The Keras model the phone deploys, weights set
      (inference.tflite is its int8 quantization).
    submodel: manifest.json's `submodel` entry.
  """

  trainer_model: tf.keras.Model
  trainer_weights: list
  inference_model: tf.keras.Model
  submodel: dict


@dataclasses.dataclass(frozen=True)
class _Context:
  """What every device model of one run is exported with."""

  run_dir: str
  config: ml_collections.ConfigDict
  data: Any  # federated_data.FederatedData
  settings: trainer_lib.TrainerSettings
  max_batch_size: int
  calibration: np.ndarray
  prune_sparsity: float
  allow_flex: bool
  out: TextIO


def run_device_model(config, data, full_model: tf.keras.Model,
                      weights: list) -> DeviceModel:
  """The full model, or the Federated Dropout submodel (`dropout.*`).

  With dropout, clients train the submodel (with the simulation's
  activation scales); its initial weights are the first k units of each
  layer, and every round's broadcast replaces them with that client's
  submodel. Phones deploy the full model.
  """
  plan = dropout_plan(config, full_model)
  if plan is None:
    trainer_model, trainer_weights = full_model, weights
  else:
    trainer_model = build_keras_model(
        config, data.input_shape, data.num_classes, plan.widths,
        plan.scales if config.dropout.rescale else None)
    first_k = {l: tf.range(k, dtype=tf.int32) for l, k in plan.widths.items()}
    trainer_weights = [np.asarray(w) for w in plan.gather(weights, first_k)]
  submodel = {'federated_dropout': plan is not None,
              'widths': plan.widths if plan is not None else {},
              'scales': (plan.scales if plan is not None and
                         config.dropout.rescale else {}),
              'full_model_shapes': [list(w.shape) for w in weights]}
  deployed = full_model
  if config.pruning.target > 0 and config.pruning.structure == 'units':
    # Pruned units output exactly 0: phones deploy the smaller model
    # without them (same logits), not the full shapes full of zeros.
    widths, compact_weights = compact_lib.compact(
        full_model, [np.asarray(w) for w in full_model.trainable_weights])
    deployed = build_keras_model(config, data.input_shape, data.num_classes,
                                 widths)
    deployed.set_weights(compact_weights)
    submodel['deployed_widths'] = widths
  return DeviceModel(trainer_model, trainer_weights, deployed, submodel)


def tier_device_models(config, data, full_model: tf.keras.Model,
                       weights: list) -> list[tuple[tier_settings.Tier,
                                                    DeviceModel]]:
  """Per tier of `tiers.mix`: the model its phones train and deploy.

  The simulation's tier model (`fedavg/process.build_tiered_training`):
  the registry's model at the tier's widths k = ⌈p n⌉, with the activation
  scales n/k when `tiers.rescale`, holding the units a phone of the tier
  deploys (`tiers/slicing.deployed_units`: the first k under nested
  slicing, the round-0 mask under random slicing) cut from the run's final
  weights. A tier phone trains from and deploys that same model.

  Raises:
    ExportError: The model cannot be sliced for a tier, or it has weights
      the tier slicing does not cover.
  """
  tiers = config_lib.settings(config).tiers
  trainable = [w for w, v in zip(weights, full_model.weights) if v.trainable]
  fixed = [w for w, v in zip(weights, full_model.weights) if not v.trainable]
  out = []
  for tier in tiers.tiers:
    try:
      plan = tier_slicing.tier_plan(full_model, tier)
    except submodel_lib.SubmodelError as e:
      raise ExportError(str(e)) from e
    scales = plan.scales if tiers.rescale else {}
    model = build_keras_model(config, data.input_shape, data.num_classes,
                              plan.widths, scales)
    units = tier_slicing.deployed_units(tiers.slicing, plan, config.seed)
    sliced = iter(tier_slicing.deployed_weights(plan, units, trainable))
    kept = iter(fixed)
    tier_weights = [np.asarray(next(sliced) if v.trainable else next(kept))
                    for v in model.weights]
    want = [tuple(v.shape) for v in model.weights]
    if [w.shape for w in tier_weights] != want:
      raise ExportError(
          f'tier {tier.name!r}: the sliced weights do not fit model '
          f'{config.model.name!r} at widths {plan.widths} (non-trainable '
          'weights are not sliced)')
    model.set_weights(tier_weights)
    out.append((tier, DeviceModel(
        model, tier_weights, model,
        {'federated_dropout': False,
         'widths': plan.widths,
         'scales': scales,
         'full_model_shapes': [list(w.shape) for w in weights],
         'tier': {'name': tier.name, 'share': tier.share,
                  'width': tier.width, 'per_layer': dict(tier.per_layer)},
         'slicing': tiers.slicing,
         'deployed_units': {l: [int(i) for i in np.asarray(u)]
                            for l, u in units.items()}})))
  return out


def export(run_dir: str, out_dir: Optional[str] = None,
           prune_sparsity: float = 0.0, allow_flex: bool = True,
           calibration_examples: int = 256,
           out: TextIO = sys.stdout,
           max_batch_size: Optional[int] = None) -> dict:
  """Exports a run directory; returns the manifest (also written).

  Writes trainer.tflite, inference.tflite and manifest.json of the run's
  client (the full model, or the Federated Dropout submodel) to `out_dir`;
  with device tiers (`tiers.mix`) also, per tier, the same three files of
  the tier's model to `out_dir/tier_<name>/`, and the top manifest's
  `tiers` lists them.

  Args:
    run_dir: A finished run directory (config.json, final_weights.npz).
    out_dir: Output folder (default `<run_dir>/tflite`).
    prune_sparsity: Fraction of kernel weights zeroed before the int8
      conversion (0 = no pruning).
    allow_flex: Fall back to a Flex trainer if a layer has no builtin
      backward pass (reported in the manifest); else raise.
    calibration_examples: Training examples for int8 calibration.
    out: Progress lines.
    max_batch_size: Most rows a `train` call may take (manifest.json; the
      graph takes any number, the host enforces the bound and sizes its
      buffers by it). Default: the run's batch size, at least
      `MIN_DEFAULT_MAX_BATCH`.

  Raises:
    ExportError: unusable run directory or settings.
  """
  if not 0.0 <= prune_sparsity < 1.0:
    raise ExportError(f'--prune_sparsity={prune_sparsity} is not in [0, 1)')
  t0 = time.monotonic()
  config, weights = load_run(run_dir)
  out_dir = out_dir or os.path.join(run_dir, 'tflite')
  data = data_registry.build_federated_data(config.data, seed=config.seed)
  full_model = build_keras_model(config, data.input_shape, data.num_classes)
  got = [tuple(w.shape) for w in weights]
  want = [tuple(w.shape) for w in full_model.weights]
  if got != want:
    raise ExportError(
        f'final_weights.npz holds shapes {got}, but model '
        f'{config.model.name!r} of this config has {want}')
  full_model.set_weights(weights)
  device = run_device_model(config, data, full_model, weights)
  tiers = (tier_device_models(config, data, full_model, weights)
           if config_lib.settings(config).tiers.active else [])

  settings = trainer_lib.TrainerSettings.of(config_lib.settings(config))
  if max_batch_size is None:
    max_batch_size = max(settings.batch_size, MIN_DEFAULT_MAX_BATCH)
  elif max_batch_size < settings.batch_size:
    raise ExportError(
        f'--max_batch_size={max_batch_size} is below the run\'s '
        f'client.batch_size={settings.batch_size}: a phone could not train '
        'the run\'s batches')
  rng = np.random.default_rng(config.seed)
  pool = []
  for client in rng.permutation(len(data.client_ids))[:20]:
    pool.append(data.client_arrays(data.client_ids[client])[0])
  pool = np.concatenate(pool)
  context = _Context(
      run_dir=run_dir, config=config, data=data, settings=settings,
      max_batch_size=int(max_batch_size),
      calibration=pool[rng.permutation(len(pool))[:calibration_examples]],
      prune_sparsity=prune_sparsity, allow_flex=allow_flex, out=out)
  manifest = _export_device_model(device, context, out_dir)
  if tiers:
    manifest['tiers'] = []
    for tier, tier_device in tiers:
      folder = f'tier_{tier.name}'
      print(f'tier {tier.describe()}:', file=out, flush=True)
      tier_manifest = _export_device_model(
          tier_device, context, os.path.join(out_dir, folder))
      manifest['tiers'].append({
          'name': tier.name, 'share': tier.share, 'width': tier.width,
          'per_layer': dict(tier.per_layer),
          'widths': tier_manifest['submodel']['widths'],
          'folder': folder,
          'params': tier_manifest['params'],
          'files': tier_manifest['files'],
          'float_accuracy': tier_manifest['inference']['float_accuracy'],
          'int8_accuracy': tier_manifest['inference']['int8_accuracy'],
      })
    run_dir_lib.write_json(os.path.join(out_dir, 'manifest.json'), manifest)
  print(f'exported {run_dir} in {time.monotonic() - t0:.0f} s', file=out,
        flush=True)
  return manifest


def _export_device_model(device: DeviceModel, context: _Context,
                        out_dir: str) -> dict:
  """Writes one device model's trainer.tflite, inference.tflite and
  manifest.json to `out_dir`; returns the manifest.

  Raises:
    ExportError: A layer has no builtin backward pass and Flex is not
      allowed.
  """
  config, data, settings = context.config, context.data, context.settings
  out = context.out
  try:
    trainer = trainer_lib.build_trainer(
        device.trainer_model, device.trainer_weights, settings,
        allow_flex=context.allow_flex)
  except layers_lib.UnsupportedLayerError as e:
    raise ExportError(f'{e}; pass --allow_flex to export a Flex trainer') from e
  if trainer.uses_flex:
    print('WARNING: model has a layer without a builtin backward pass; '
          'trainer.tflite NEEDS THE FLEX DELEGATE (see manifest.json)',
          file=out, flush=True)
  params = int(sum(w.size for w in device.trainer_weights))
  print(f'converting the trainer ({config.model.name}, {params:,} '
        'parameters) ...', file=out, flush=True)
  trainer_bytes = convert.convert_trainer(trainer)
  ops = convert.ops_used(trainer_bytes)

  # Inference: int8 PTQ of the deployed model (optionally pruned first).
  calibration = context.calibration
  test_x, test_y = data.test_x, data.test_y
  float_acc = _accuracy_keras(device.inference_model, test_x, test_y)
  inference_keras = device.inference_model
  pruning = None
  if context.prune_sparsity > 0:
    inference_keras = prune(device.inference_model, context.prune_sparsity,
                            calibration)
    kernels = [w for w in inference_keras.weights if len(w.shape) > 1]
    zeros = sum(int(np.sum(w.numpy() == 0)) for w in kernels)
    pruning = {
        'target_sparsity': context.prune_sparsity,
        'kernel_sparsity': zeros / sum(int(np.prod(w.shape))
                                       for w in kernels),
        'float_accuracy': _accuracy_keras(inference_keras, test_x, test_y),
    }
  print('converting the int8 inference model ...', file=out, flush=True)
  int8_bytes = inference_model(inference_keras, calibration, int8=True)
  int8_acc = _accuracy_tflite(int8_bytes, test_x, test_y)
  if pruning is not None:
    pruning['int8_accuracy'] = int8_acc
    pruning['accuracy_cost_vs_unpruned_float'] = float_acc - int8_acc

  os.makedirs(out_dir, exist_ok=True)
  files = {'trainer.tflite': trainer_bytes, 'inference.tflite': int8_bytes}
  for name, blob in files.items():
    with open(os.path.join(out_dir, name), 'wb') as f:
      f.write(blob)
  float_bytes = int(sum(w.nbytes for w in device.trainer_weights))
  shapes = [tuple(w.shape) for w in device.trainer_weights]
  names = [w.name for w in device.trainer_model.weights]
  flex = convert.flex_ops(ops)
  max_batch_size = context.max_batch_size
  manifest = {
      'format': MANIFEST_FORMAT,
      'run_dir': os.path.abspath(context.run_dir),
      'config_name': config.name,
      'model': config.model.name,
      'input_shape': list(data.input_shape),
      'num_classes': int(data.num_classes),
      'seed': int(config.seed),
      'batch_size': settings.batch_size,
      'max_batch_size': max_batch_size,
      'epochs': int(config.client.epochs),
      'optimizer': {'name': 'sgdm' if settings.momentum else 'sgd',
                    'learning_rate': settings.learning_rate,
                    'momentum': settings.momentum},
      'weights': [{'param': f'a{i}', 'name': n, 'shape': list(s)}
                  for i, (n, s) in enumerate(zip(names, shapes))],
      'params': params,
      'submodel': device.submodel,
      'codecs': {
          'broadcast': _codec_json(settings.broadcast),
          'uplink': _codec_json(settings.uplink),
      },
      'broadcast_tensors': tensor_layout(
          trainer.broadcast_coder.specs(), shapes, names, 'input'),
      'update_tensors': tensor_layout(
          trainer.uplink_coder.specs(), shapes, names, 'output'),
      'signatures': signature_details(trainer_bytes),
      'round': _round_protocol(settings.batch_size, max_batch_size,
                               int(config.client.epochs)),
      'ops': ops,
      'flex_required': bool(flex),
      'flex_ops': flex,
      'builtin_backward': not trainer.uses_flex,
      'files': {
          'trainer.tflite': len(trainer_bytes),
          'inference.tflite': len(int8_bytes),
          'float_weights': float_bytes,
          'trainer_vs_float_weights': len(trainer_bytes) / float_bytes,
      },
      'inference': {
          'quantization': 'post-training full-integer int8, float32 '
                          'input/output',
          'calibration_examples': int(len(calibration)),
          'test_examples': int(len(test_y)),
          'float_accuracy': float_acc,
          'int8_accuracy': int8_acc,
          'int8_accuracy_loss_pt': 100 * (float_acc - int8_acc),
          'pruning': pruning,
      },
  }
  run_dir_lib.write_json(os.path.join(out_dir, 'manifest.json'), manifest)
  print(f'wrote {out_dir}: trainer.tflite {len(trainer_bytes):,} B '
        f'({len(trainer_bytes) / float_bytes:.3f}x the float weights, '
        f'{"FLEX NEEDED" if flex else "builtin ops only"}), '
        f'inference.tflite {len(int8_bytes):,} B; test accuracy float '
        f'{float_acc:.4f} int8 {int8_acc:.4f}'
        + (f' (pruned {context.prune_sparsity:.0%}: float '
           f'{pruning["float_accuracy"]:.4f})' if pruning else ''),
        file=out, flush=True)
  return manifest


def _codec_json(codec) -> dict:
  return {'transform': codec.transform, 'bits': codec.bits,
          'quantizer': codec.quantizer, 'scale': codec.resolved_scale,
          'subsample': codec.subsample, 'min_size': codec.min_size,
          'identity': codec.is_identity}
