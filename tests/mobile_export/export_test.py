"""Export binary failure modes and the Flex fallback."""

import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
import numpy as np
import tensorflow as tf

from mobile_export import convert
from mobile_export import device_client
from mobile_export import export_lib
from mobile_export import layers
from mobile_export import trainer as trainer_lib
from tests.mobile_export import device_testing
from tests.tff_compress import run_utils
from tff_compress import config_lib
from tff_compress.models import registry as model_registry


def _export(*args):
  env = dict(os.environ, PYTHONPATH=device_testing.WORKSPACE,
             TF_CPP_MIN_LOG_LEVEL='3')
  env.pop('BUILD_WORKING_DIRECTORY', None)
  return subprocess.run(
      [sys.executable, '-m', 'mobile_export.export', *args], env=env,
      cwd=device_testing.WORKSPACE, capture_output=True, text=True,
      stdin=subprocess.DEVNULL, timeout=300, check=False)


class ExportBinaryTest(absltest.TestCase):

  def test_unusable_run_dirs_are_one_line_errors(self):
    tmp = tempfile.mkdtemp()
    no_weights = os.path.join(tmp, 'unfinished')
    os.makedirs(no_weights)
    with open(os.path.join(no_weights, 'config.json'), 'w') as f:
      f.write(config_lib.to_json(config_lib.default_config()))
    bad_json = os.path.join(tmp, 'bad')
    os.makedirs(bad_json)
    with open(os.path.join(bad_json, 'config.json'), 'w') as f:
      f.write('{not json')
    cases = {
        os.path.join(tmp, 'missing'): 'run directory not found',
        tmp: 'is not a run directory (no config.json)',
        no_weights: 'has no final_weights.npz',
        bad_json: 'is not valid JSON',
    }
    for run_dir, text in cases.items():
      proc = _export(f'--run_dir={run_dir}')
      self.assertEqual(proc.returncode, 2, proc.stderr)
      lines = proc.stderr.strip().splitlines()
      self.assertLen(lines, 1, proc.stderr)
      self.assertStartsWith(lines[0], 'export: error: ')
      self.assertIn(text, lines[0])
    proc = _export()
    self.assertEqual(proc.returncode, 2)
    self.assertIn('--run_dir is required', proc.stderr)


def _run_dir(batch_size: int) -> str:
  """A finished-looking run of the smoke config (dense model), untrained."""
  config = config_lib.load_config_file(
      os.path.join(device_testing.WORKSPACE, 'configs', 'smoke.py'))
  config.client.batch_size = batch_size
  config = config_lib.validate(config)
  run_dir = tempfile.mkdtemp()
  with open(os.path.join(run_dir, 'config.json'), 'w') as f:
    f.write(config_lib.to_json(config))
  model = model_registry.build_model('dense', (28, 28, 1), 10)
  np.savez(os.path.join(run_dir, 'final_weights.npz'), *model.get_weights())
  return run_dir


class ManifestTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.run_dir = _run_dir(batch_size=20)
    cls.manifest = export_lib.export(cls.run_dir, calibration_examples=16,
                                     out=open(os.devnull, 'w'))

  def test_batch_rules(self):
    m = self.manifest
    self.assertEqual(m['format'], 2)
    self.assertEqual(m['batch_size'], 20)
    # The run's batch, at least Flower's default of 32.
    self.assertEqual(m['max_batch_size'], 32)
    self.assertEqual(m['round']['train_rows']['max'], 32)
    self.assertEqual(m['round']['train_rows']['ignored_label'], -1)
    train = m['signatures']['train']
    self.assertEqual(train['inputs']['x'],
                     {'shape': [-1, 28, 28, 1], 'dtype': 'float32'})
    self.assertEqual(train['inputs']['y'], {'shape': [-1], 'dtype': 'int32'})
    self.assertEqual(train['outputs']['loss']['dtype'], 'float32')
    self.assertIn('max_batch_size', train['doc'])

  def test_every_signature_and_round_step_is_described(self):
    m = self.manifest
    for key, signature in m['signatures'].items():
      self.assertNotEmpty(signature.get('doc', ''), key)
    steps = ' '.join(m['round']['steps'])
    for name in ('load_broadcast', 'train', 'parameters', 'encode_update'):
      self.assertIn(name, steps)

  def test_a_maximum_below_the_runs_batch_is_refused(self):
    with self.assertRaisesRegex(export_lib.ExportError,
                                'max_batch_size=16 is below .*batch_size=20'):
      export_lib.export(self.run_dir, out_dir=tempfile.mkdtemp(),
                        max_batch_size=16, out=open(os.devnull, 'w'))

  def test_a_fixed_batch_manifest_must_be_re_exported(self):
    model_dir = tempfile.mkdtemp()
    old = dict(self.manifest, format=1)
    del old['max_batch_size']
    with open(os.path.join(model_dir, 'manifest.json'), 'w') as f:
      json.dump(old, f)
    with open(os.path.join(model_dir, 'trainer.tflite'), 'wb') as f:
      f.write(b'')
    with self.assertRaisesRegex(device_client.DeviceError,
                                'format 1 .*re-export'):
      device_client.DeviceTrainer(model_dir)


class FlexFallbackTest(absltest.TestCase):

  def test_unsupported_layer_falls_back_to_flex_loudly(self):
    model = tf.keras.Sequential([
        tf.keras.layers.InputLayer((8, 8, 1)),
        tf.keras.layers.Conv2D(2, 3, activation='tanh'),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(3)])
    config = config_lib.default_config()
    config.client.batch_size = 4
    settings = trainer_lib.TrainerSettings.of(config_lib.settings(config))
    with self.assertRaises(layers.UnsupportedLayerError):
      trainer_lib.build_trainer(model, model.get_weights(), settings)
    trainer = trainer_lib.build_trainer(model, model.get_weights(), settings,
                                        allow_flex=True)
    self.assertTrue(trainer.uses_flex)
    ops = convert.ops_used(convert.convert_trainer(trainer))
    self.assertNotEmpty(convert.flex_ops(ops))
    # The tape trainer computes the same step as the builtin one would.
    x = np.random.default_rng(0).random((4, 8, 8, 1)).astype(np.float32)
    y = np.array([0, 1, 2, -1], np.int32)
    before = [v.numpy() for v in trainer.weights]
    loss = float(trainer.train_step(tf.constant(x), tf.constant(y)))
    want = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
        y[:3], _logits(model, before, x[:3]))
    self.assertAlmostEqual(loss, float(want), places=5)


def _logits(model, weights, x):
  clone = tf.keras.models.clone_model(model)
  clone.set_weights(weights)
  return clone(x)



class PrunedUnitsExportTest(absltest.TestCase):

  def test_a_units_pruned_run_deploys_the_smaller_model(self):
    cfg = run_utils.smoke_config(**{
        'pruning.target': 0.5, 'pruning.structure': 'units',
        'pruning.end_round': 3, 'pruning.frequency': 1})
    model = model_registry.build_model('dense', (28, 28, 1), 10)
    weights = [w.numpy() for w in model.weights]
    # dense1 (64 units): 40 units pruned, their incoming weights and biases 0.
    weights[0][:, 24:] = 0
    weights[1][24:] = 0
    model.set_weights(weights)

    class _Data:
      input_shape, num_classes = (28, 28, 1), 10

    device = export_lib.run_device_model(cfg, _Data(), model, weights)
    self.assertEqual(device.submodel['deployed_widths'], {'dense1': 24})
    self.assertEqual(
        sum(int(np.prod(w.shape)) for w in device.inference_model.weights),
        784 * 24 + 24 + 24 * 10 + 10)
    self.assertIs(device.trainer_model, model)  # phones train full shapes
    x = np.random.default_rng(0).random((16, 28, 28, 1), np.float32)
    np.testing.assert_allclose(device.inference_model(x).numpy(),
                               model(x).numpy(), rtol=1e-5, atol=1e-5)


if __name__ == '__main__':
  absltest.main()
