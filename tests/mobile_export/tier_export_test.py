"""Device-tier export: one builtin-op trainer and one int8 inference model
per tier, each checked in the TF-free runtime; each slot's device-round
broadcast fits the trainer of its tier (tier_round_test runs the rounds)."""

import io
import json
import os
import shutil
import tempfile

from absl.testing import absltest
import numpy as np

from mobile_export import device_round_lib
from mobile_export import export_lib
from mobile_export import messages
from tests.mobile_export import device_testing
from tests.tff_compress import run_utils
from tff_compress import config_lib
from tff_compress import simulate_lib
from tff_compress.data import registry as data_registry
from tff_compress.models import registry as model_registry
from tff_compress.runtime import local as local_runtime

_MIX = 'big:1:1.0, low:1:0.5'
_HIDDEN = 64  # units of the dense model's hidden layer `dense1`


class TierExportTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.run_dir = os.path.join(cls.tmp, 'run')
    cls.config = run_utils.smoke_config(rounds=1, **{'tiers.mix': _MIX})
    simulate_lib.run(cls.config, cls.run_dir, out=io.StringIO())
    cls.out_dir = os.path.join(cls.tmp, 'tflite')
    cls.manifest = export_lib.export(cls.run_dir, cls.out_dir,
                                     calibration_examples=64,
                                     out=io.StringIO())
    cls.tier_manifests = {}
    for name in ('big', 'low'):
      with open(os.path.join(cls.out_dir, f'tier_{name}',
                             'manifest.json')) as f:
        cls.tier_manifests[name] = json.load(f)
    with open(os.path.join(cls.run_dir, 'summary.json')) as f:
      cls.summary = json.load(f)
    # The TF-free runtime: int8 accuracy of each inference.tflite and one
    # `train` call of each trainer.tflite.
    data = data_registry.build_federated_data(cls.config.data,
                                              seed=cls.config.seed)
    x, y = data.client_arrays(data.client_ids[0])
    in_path = os.path.join(cls.tmp, 'probe_in.npz')
    out_path = os.path.join(cls.tmp, 'probe_out.json')
    np.savez(in_path, test_x=data.test_x, test_y=data.test_y,
             x=x[:cls.config.client.batch_size],
             y=y[:cls.config.client.batch_size])
    proc = device_testing.run_device(
        ['tests/mobile_export/tier_probe.py', in_path, out_path,
         *(os.path.join(cls.out_dir, f'tier_{n}') for n in ('big', 'low'))],
        timeout=600)
    if proc.returncode:
      raise AssertionError(f'tier_probe failed:\n{proc.stderr[-3000:]}')
    with open(out_path) as f:
      cls.device = json.load(f)
    cls.test_examples = len(data.test_y)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def test_each_tier_folder_holds_a_builtin_op_trainer(self):
    for name, m in self.tier_manifests.items():
      folder = os.path.join(self.out_dir, f'tier_{name}')
      for file in ('trainer.tflite', 'inference.tflite'):
        self.assertEqual(os.path.getsize(os.path.join(folder, file)),
                         m['files'][file], (name, file))
      self.assertFalse(m['flex_required'], name)
      self.assertEmpty(m['flex_ops'], name)
      self.assertTrue(m['builtin_backward'], name)
      self.assertEqual(m['format'], export_lib.MANIFEST_FORMAT)
      self.assertEqual(m['submodel']['tier']['name'], name)
      self.assertFalse(m['submodel']['federated_dropout'])

  def test_tier_widths_scales_and_nested_units(self):
    big, low = self.tier_manifests['big'], self.tier_manifests['low']
    self.assertEqual(big['submodel']['widths'], {'dense1': _HIDDEN})
    self.assertEqual(big['submodel']['scales'], {})
    self.assertEqual(low['submodel']['widths'], {'dense1': _HIDDEN // 2})
    # tiers.rescale (default True): the simulation's n/k scaler.
    self.assertEqual(low['submodel']['scales'], {'dense1': 2.0})
    self.assertEqual(low['submodel']['tier'],
                     {'name': 'low', 'share': 0.5, 'width': 0.5,
                      'per_layer': {}})
    self.assertEqual(low['submodel']['deployed_units'],
                     {'dense1': list(range(_HIDDEN // 2))})
    self.assertEqual([w['shape'] for w in low['weights']],
                     [[784, 32], [32], [32, 10], [10]])

  def test_params_are_the_tier_submodels(self):
    for name, m in self.tier_manifests.items():
      widths = m['submodel']['widths']
      want = model_registry.build_model('dense', (28, 28, 1), 10,
                                        widths=widths).count_params()
      self.assertEqual(m['params'], want, name)
      self.assertEqual(self.device[f'tier_{name}']['params'], want, name)
    self.assertEqual(self.tier_manifests['big']['params'],
                     self.manifest['params'])

  def test_the_low_tiers_files_are_smaller(self):
    big = self.tier_manifests['big']['files']
    low = self.tier_manifests['low']['files']
    for file in ('trainer.tflite', 'inference.tflite', 'float_weights'):
      self.assertLess(low[file], big[file], file)

  def test_int8_accuracy_is_the_tf_free_runtimes(self):
    for name, m in self.tier_manifests.items():
      self.assertEqual(m['inference']['test_examples'], self.test_examples)
      self.assertEqual(m['inference']['int8_accuracy'],
                       self.device[f'tier_{name}']['int8_accuracy'], name)

  def test_float_accuracy_is_the_simulations_deployed_model(self):
    # summary.json: the simulation's evaluation of each tier's deployed
    # model on the test split, i.e. the same model cut the same way.
    for name, m in self.tier_manifests.items():
      self.assertAlmostEqual(m['inference']['float_accuracy'],
                             self.summary['tier_accuracy'][name], places=6,
                             msg=name)

  def test_one_train_step_runs_on_the_tf_free_runtime(self):
    for name in self.tier_manifests:
      figures = self.device[f'tier_{name}']
      self.assertTrue(np.isfinite(figures['train_loss']), name)
      self.assertGreater(figures['train_loss'], 0.0, name)
      self.assertGreater(figures['max_weight_change'], 0.0, name)

  def test_the_top_manifest_lists_the_tiers(self):
    self.assertEqual([t['name'] for t in self.manifest['tiers']],
                     ['big', 'low'])
    for entry in self.manifest['tiers']:
      m = self.tier_manifests[entry['name']]
      self.assertEqual(entry['folder'], f'tier_{entry["name"]}')
      self.assertEqual(entry['share'], 0.5)
      self.assertEqual(entry['widths'], m['submodel']['widths'])
      self.assertEqual(entry['files'], m['files'])
      self.assertEqual(entry['params'], m['params'])
      self.assertEqual(entry['int8_accuracy'],
                       m['inference']['int8_accuracy'])
      self.assertEqual(entry['float_accuracy'],
                       m['inference']['float_accuracy'])
    with open(os.path.join(self.out_dir, 'manifest.json')) as f:
      self.assertEqual(json.load(f)['tiers'], self.manifest['tiers'])
    # The top folder is still the full model's export.
    self.assertEqual(self.manifest['submodel']['widths'], {})
    self.assertNotIn('tier', self.manifest['submodel'])

  def test_device_round_messages_fit_the_trainer_slots_json_names(self):
    round_dir = os.path.join(self.tmp, 'round0')
    with local_runtime.local_context():
      device_round_lib.DeviceRounds(self.run_dir).broadcast(0, round_dir)
    with open(device_round_lib.slots_path(round_dir)) as f:
      slots = json.load(f)['slots']
    self.assertLen(slots, self.config.clients_per_round)
    layouts = {}
    for name in ('big', 'low'):
      tensors = self.tier_manifests[name]['broadcast_tensors']
      layouts[f'tier_{name}'] = (
          [{e['key']: (np.dtype(e['dtype']), e['count'])
            for e in t['entries']} for t in tensors],
          [t['elements'] for t in tensors])
    for entry in slots:
      # The message parses as the broadcast of the trainer the slot's
      # device runs, and not as the other tier's.
      with open(os.path.join(round_dir, entry['broadcast']), 'rb') as f:
        blob = f.read()
      self.assertEqual(entry['model_folder'], f'tier_{entry["tier"]}')
      for folder, (specs, sizes) in layouts.items():
        if folder == entry['model_folder']:
          self.assertEqual(messages.unpack(messages.BROADCAST, blob, specs,
                                           sizes).round, 0)
        else:
          with self.assertRaises(messages.PayloadError):
            messages.unpack(messages.BROADCAST, blob, specs, sizes)

  def test_device_rounds_refuse_a_train_only_run(self):
    run_dir = os.path.join(self.tmp, 'train_only')
    os.makedirs(run_dir)
    shutil.copy(os.path.join(self.run_dir, 'final_weights.npz'), run_dir)
    with open(os.path.join(run_dir, 'config.json'), 'w') as f:
      f.write(config_lib.to_json(run_utils.smoke_config(
          rounds=1, **{'tiers.mix': _MIX, 'tiers.train_only': 'low'})))
    with self.assertRaisesRegex(
        device_round_lib.DeviceRoundError,
        "tiers.train_only='low' baseline run: device rounds of train_only "
        'runs are not supported'):
      device_round_lib.DeviceRounds(run_dir)


class RandomSlicingTierTest(absltest.TestCase):

  def test_a_random_slicing_tier_deploys_the_round_0_mask(self):
    config = run_utils.smoke_config(**{'tiers.mix': _MIX,
                                       'tiers.slicing': 'random'})
    data = data_registry.build_federated_data(config.data, seed=config.seed)
    model = export_lib.build_keras_model(config, data.input_shape,
                                         data.num_classes)
    weights = [np.asarray(w) for w in model.get_weights()]
    tiers = dict((t.name, d) for t, d in export_lib.tier_device_models(
        config, data, model, weights))
    low = tiers['low']
    units = low.submodel['deployed_units']['dense1']
    self.assertLen(units, _HIDDEN // 2)
    self.assertEqual(units, sorted(set(units)))
    self.assertNotEqual(units, list(range(_HIDDEN // 2)))
    want = [weights[0][:, units], weights[1][units], weights[2][units],
            weights[3]]
    for got, w in zip(low.trainer_weights, want):
      np.testing.assert_array_equal(got, w)
    for got, w in zip(low.inference_model.get_weights(), want):
      np.testing.assert_array_equal(got, w)
    # The full-width tier keeps every unit.
    self.assertEqual(tiers['big'].submodel['deployed_units']['dense1'],
                     list(range(_HIDDEN)))


if __name__ == '__main__':
  absltest.main()
