"""One federated round where TF-free device processes replace the clients.

The simulated round is TFF's learning process (lossy Hadamard 8-bit or EDEN 2-bit
broadcast, client SGD with momentum, 2 local epochs, float uplink); the
device round exports the same initial model with the export library, has
the server encode the broadcast message, runs K reference clients in
.venv-device (tflite-runtime and ai-edge-litert) in parallel, decodes their
update messages with the simulation's decoder and applies the run's server
optimizer — the run's own TFF aggregation (`server.py`). Both global models
must agree to float tolerance.
"""

import os
import tempfile

from absl.testing import absltest
import numpy as np

from mobile_export import device_client
from mobile_export import export_lib
from mobile_export import server as server_lib
from tests.mobile_export import device_testing
from tests.tff_compress import run_utils
from tff_compress import config_lib
from tff_compress.data import registry as data_registry
from tff_compress.fedavg import process as process_lib
from tff_compress.learning import task as task_lib
from tff_compress.program import sampling
from tff_compress.runtime import local as local_runtime

_K = 3


def _config(**overrides):
  return run_utils.smoke_config(**{
      'clients_per_round': _K, 'client.epochs': 2, 'client.momentum': 0.9,
      'broadcast.transform': 'hadamard', 'broadcast.bits': 8, **overrides})


def _run_round(cls, cfg):
  """Simulated round vs device round of `cfg`; results as `cls` attributes."""
  cls.cfg = cfg
  data = cls.data = data_registry.build_federated_data(cfg.data,
                                                       seed=cfg.seed)
  task = task_lib.build_task(cfg.model.name, data, seed=cfg.seed)
  # As simulate builds it.
  training = process_lib.build_training(run_utils.training(cfg), task)
  process = training.process
  cls.picked = sampling.sample_clients(len(data.client_ids), _K, cfg.seed, 1)
  cls.seeds = [sampling.shuffle_seed(cfg.seed, 1, int(i))
               for i in cls.picked]
  datasets = training.client_inputs(device_testing.device_ordered_datasets(
      data, cls.picked, cfg))  # dropout: slot k = client k
  with local_runtime.local_context():
    state = process.initialize()
    cls.w0 = [np.asarray(w) for w in
              process.get_model_weights(state).trainable]
    out = process.next(state, datasets)
    cls.w1_sim = [np.asarray(w) for w in
                  process.get_model_weights(out.state).trainable]

  cls.tmp = tempfile.mkdtemp()
  run_dir = os.path.join(cls.tmp, 'run')
  os.makedirs(run_dir)
  with open(os.path.join(run_dir, 'config.json'), 'w') as f:
    f.write(config_lib.to_json(cfg))
  np.savez(os.path.join(run_dir, 'final_weights.npz'), *cls.w0)
  cls.manifest = export_lib.export(run_dir, prune_sparsity=0.5,
                                   out=open(os.devnull, 'w'))
  cls.model_dir = os.path.join(run_dir, 'tflite')

  model = task.keras_model_fn()
  model.set_weights(cls.w0)
  server = cls.server = server_lib.DeviceRoundServer(
      run_utils.settings(cfg), model)
  procs = []
  for k, (index, seed) in enumerate(zip(cls.picked, cls.seeds)):
    broadcast = os.path.join(cls.tmp, f'broadcast{k}.bin')
    with open(broadcast, 'wb') as f:
      f.write(server.broadcast(cls.w0, round_index=0, slot=k))
    x, y = data.client_arrays(data.client_ids[index])
    client = os.path.join(cls.tmp, f'client{k}.npz')
    np.savez(client, x=x, y=y, shuffle_seed=seed)
    runtime_name = device_client.RUNTIMES[k % 2]
    procs.append(device_testing.popen_device([
        '-m', 'mobile_export.device_client', f'--model_dir={cls.model_dir}',
        f'--broadcast={broadcast}', f'--data={client}',
        f'--out={os.path.join(cls.tmp, f"update{k}.bin")}',
        f'--runtime={runtime_name}']))
  cls.summaries = device_testing.device_summaries(procs)
  blobs = {}
  for k in range(_K):
    with open(os.path.join(cls.tmp, f'update{k}.bin'), 'rb') as f:
      blobs[k] = f.read()
  cls.decoded = [server.decode_update(blobs[k], 0) for k in range(_K)]
  with local_runtime.local_context():
    cls.result = server.run_round(server.initial_state(cls.w0), blobs)
  cls.w1_dev = cls.result.state.weights


class DeviceRoundTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    _run_round(cls, _config())

  def test_global_model_matches_the_simulated_round(self):
    for dev, sim, w0 in zip(self.w1_dev, self.w1_sim, self.w0):
      self.assertGreater(np.abs(sim - w0).max(), 1e-3)  # the round moved it
      np.testing.assert_allclose(dev, sim, rtol=1e-4,
                                 atol=1e-5 * np.abs(sim).max())

  def test_devices_report_their_work(self):
    for summary, index, (_, weight) in zip(self.summaries, self.picked,
                                           self.decoded):
      n = self.data.client_size(self.data.client_ids[index])
      self.assertEqual(summary['examples'], 2 * n)
      self.assertEqual(weight, 2 * n)  # TFF's NUM_EXAMPLES weighting
      self.assertEqual(summary['steps'], -(-2 * n // self.cfg.client.batch_size))
      self.assertTrue(summary['finite'])
      self.assertEqual(summary['round'], 0)

  def test_every_device_is_accepted(self):
    self.assertEqual([(o.slot, o.status) for o in self.result.outcomes],
                     [(k, server_lib.ACCEPTED) for k in range(_K)])
    self.assertEqual(self.result.state.round, 1)

  def test_manifest(self):
    m = self.manifest
    self.assertFalse(m['flex_required'])
    self.assertTrue(m['builtin_backward'])
    self.assertEmpty(m['flex_ops'])
    self.assertEqual(set(m['signatures']), {
        'train', 'infer', 'parameters', 'restore', 'load_broadcast',
        'encode_update'})
    # Any batch up to max(run batch 32, 32) rows: the batch is -1.
    self.assertEqual(m['signatures']['train']['inputs']['x']['shape'],
                     [-1, 28, 28, 1])
    self.assertEqual(m['max_batch_size'], 32)
    self.assertEqual(m['optimizer'], {'name': 'sgdm', 'learning_rate': 0.1,
                                      'momentum': 0.9})
    for name, size in (('trainer.tflite', m['files']['trainer.tflite']),
                       ('inference.tflite', m['files']['inference.tflite'])):
      self.assertEqual(os.path.getsize(os.path.join(self.model_dir, name)),
                       size)
    self.assertEqual(m['files']['float_weights'],
                     sum(w.nbytes for w in self.w0))
    # int8 weights: about a quarter of the float bytes (plus the graph).
    self.assertLess(m['files']['inference.tflite'],
                    0.5 * m['files']['float_weights'])
    inference = m['inference']
    self.assertEqual(inference['test_examples'], len(self.data.test_y))
    for key in ('float_accuracy', 'int8_accuracy'):
      self.assertBetween(inference[key], 0.0, 1.0)
    pruning = inference['pruning']
    self.assertAlmostEqual(pruning['kernel_sparsity'], 0.5, delta=0.01)
    broadcast = m['broadcast_tensors'][0]
    self.assertEqual([e['key'] for e in broadcast['entries']],
                     ['quantize/min', 'quantize/max', 'values'])
    self.assertEqual(broadcast['entries'][2]['dtype'], 'uint8')
    self.assertEqual([e['key'] for e in m['update_tensors'][0]['entries']],
                     ['raw'])


class DropoutDeviceRoundTest(absltest.TestCase):
  """The same round with Federated Dropout: devices hold submodels."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    _run_round(cls, _config(**{'dropout.keep': 0.5}))

  def test_global_model_matches_the_simulated_dropout_round(self):
    for dev, sim, w0 in zip(self.w1_dev, self.w1_sim, self.w0):
      self.assertGreater(np.abs(sim - w0).max(), 1e-3)
      np.testing.assert_allclose(dev, sim, rtol=1e-4,
                                 atol=1e-5 * np.abs(sim).max())

  def test_devices_train_their_own_submodels(self):
    plan = self.server.plan
    self.assertIsNotNone(plan)
    sub = [tuple(s) for s in plan.sub_shapes()]
    for update, _ in self.decoded:
      self.assertEqual([tuple(u.shape) for u in update], sub)
    self.assertLess(sum(np.prod(s) for s in sub),
                    0.6 * sum(w.size for w in self.w0))
    self.assertTrue(self.manifest['submodel']['federated_dropout'])
    self.assertEqual([tuple(w['shape']) for w in self.manifest['weights']],
                     sub)
    masks = [self.server.kept(0, k) for k in range(_K)]
    for layer in masks[0]:  # per-client masks: the devices differ
      self.assertGreater(len({tuple(m[layer].numpy()) for m in masks}), 1)

  def test_coordinates_nobody_trained_keep_their_value(self):
    plan = self.server.plan
    counts = [sum(np.asarray(c) for c in cover) for cover in zip(
        *[plan.coverage(self.server.kept(0, k)) for k in range(_K)])]
    untrained = 0
    for w1, w0, c in zip(self.w1_dev, self.w0, counts):
      np.testing.assert_array_equal(w1[c == 0], w0[c == 0])
      untrained += int((c == 0).sum())
    self.assertGreater(untrained, 0)  # 3 clients at p = 0.5 leave some


class EdenDeviceRoundTest(absltest.TestCase):
  """The round with a 2-bit EDEN broadcast after the whole-tensor rotation
  (minimum-error scale, `broadcast.scale=auto`): the phone's builtin-only
  `load_broadcast` decodes the model the simulation's clients train from.

  The uplink stays float32: a lossy uplink's seed is a digest of the update
  (`prng.update_seed`), and the phone's update differs from the
  simulation's in the last float bits, so the two rounds draw different
  quantization noise for any quantizer (a 4-bit Hadamard uplink: 12 %
  apart). `trainer_test` checks the phone's uplink encoding against the
  server's for the same seed; `encoders/tflite_test` EDEN's codes.
  """

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    _run_round(cls, _config(**{
        'broadcast.transform': 'rotation', 'broadcast.bits': 2,
        'broadcast.quantizer': 'eden'}))

  def test_global_model_matches_the_simulated_round(self):
    for dev, sim, w0 in zip(self.w1_dev, self.w1_sim, self.w0):
      self.assertGreater(np.abs(sim - w0).max(), 1e-3)
      np.testing.assert_allclose(dev, sim, rtol=1e-4,
                                 atol=1e-5 * np.abs(sim).max())

  def test_manifest(self):
    m = self.manifest
    self.assertFalse(m['flex_required'])
    self.assertEmpty(m['flex_ops'])
    self.assertEqual(
        {k: m['codecs']['broadcast'][k] for k in ('quantizer', 'scale')},
        {'quantizer': 'eden', 'scale': 'mse'})
    broadcast = m['broadcast_tensors'][0]
    self.assertEqual([e['key'] for e in broadcast['entries']],
                     ['eden/scale', 'values'])
    self.assertEqual(broadcast['entries'][1]['dtype'], 'uint8')


if __name__ == '__main__':
  absltest.main()
