"""A device round of a tiered run: each TF-free device trains its tier's
trainer on its tier's slice, and the server closes the round as the
simulation does.

The simulated round is the tiered learning process (three tiers at widths
1, 1/2 and 1/4; an 8-bit Hadamard broadcast, client SGD with momentum, 2
local epochs). The device round goes through the operator's path: the run
is exported (one trainer per tier), `DeviceRounds.broadcast` writes each
slot's message and `slots.json`, one `device_client` per slot runs the
trainer folder `slots.json` names, in .venv-device, and
`DeviceRounds.aggregate` runs each tier's partial-sum aggregation and the
tiered server step on the decoded updates. Both global models must agree
to float tolerance, with nested slices and with random (Federated Dropout)
slices.
"""

import json
import os
import shutil
import tempfile

from absl.testing import absltest
import numpy as np

from mobile_export import device_client
from mobile_export import device_round_lib
from mobile_export import export_lib
from mobile_export import messages
from mobile_export import server as server_lib
from tests.mobile_export import device_testing
from tests.tff_compress import run_utils
from tff_compress import config_lib
from tff_compress.data import registry as data_registry
from tff_compress.fedavg import process as process_lib
from tff_compress.learning import task as task_lib
from tff_compress.program import sampling
from tff_compress.runtime import local as local_runtime
from tff_compress.tiers import slicing as tier_slicing

_MIX = 'high:1:1.0, mid:1:0.5, low:1:0.25'
_NAMES = ('high', 'mid', 'low')
# Smoke's seed and 20 clients: round 1 samples tiers mid, high, mid, low.
_K = 4


def _config(**overrides):
  return run_utils.smoke_config(**{
      'clients_per_round': _K, 'client.epochs': 2, 'client.momentum': 0.9,
      'broadcast.transform': 'hadamard', 'broadcast.bits': 8,
      'tiers.mix': _MIX, **overrides})


def _run_rounds(cls, cfg):
  """Simulated vs device round 0 of `cfg`; results as `cls` attributes."""
  cls.cfg = cfg
  data = cls.data = data_registry.build_federated_data(cfg.data,
                                                       seed=cfg.seed)
  task = task_lib.build_task(cfg.model.name, data, seed=cfg.seed)
  training = cls.training = process_lib.build_tiered_training(
      run_utils.training(cfg), task, len(data.client_ids))
  cls.picked = sampling.sample_clients(len(data.client_ids), _K, cfg.seed, 1)
  cls.tiers = training.assignment[cls.picked]
  inputs = training.tier_inputs(
      device_testing.device_ordered_datasets(data, cls.picked, cfg),
      cls.tiers)
  with local_runtime.local_context():
    state = training.process.initialize()
    cls.w0 = [np.asarray(w) for w in
              training.process.get_model_weights(state).trainable]
    out = training.process.next(state, inputs)
    cls.w1_sim = [np.asarray(w) for w in
                  training.process.get_model_weights(out.state).trainable]

  cls.tmp = tempfile.mkdtemp()
  run_dir = cls.run_dir = os.path.join(cls.tmp, 'run')
  os.makedirs(run_dir)
  with open(os.path.join(run_dir, 'config.json'), 'w') as f:
    f.write(config_lib.to_json(cfg))
  np.savez(os.path.join(run_dir, 'final_weights.npz'), *cls.w0)
  export_lib.export(run_dir, calibration_examples=32,
                    out=open(os.devnull, 'w'))
  cls.model_dir = os.path.join(run_dir, 'tflite')

  rounds = cls.rounds = device_round_lib.DeviceRounds(run_dir)
  cls.round_dir = os.path.join(cls.tmp, 'r0')
  with local_runtime.local_context():
    rounds.broadcast(0, cls.round_dir, client_data=True)
  with open(device_round_lib.slots_path(cls.round_dir)) as f:
    cls.slots = json.load(f)
  procs = []
  for entry in cls.slots['slots']:
    k = entry['slot']
    procs.append(device_testing.popen_device([
        '-m', 'mobile_export.device_client',
        f'--model_dir={os.path.join(cls.model_dir, entry["model_folder"])}',
        f'--broadcast={os.path.join(cls.round_dir, entry["broadcast"])}',
        f'--data={os.path.join(cls.round_dir, entry["client_data"])}',
        f'--out={device_round_lib.update_path(cls.round_dir, k)}',
        f'--runtime={device_client.RUNTIMES[k % 2]}']))
  cls.summaries = device_testing.device_summaries(procs)
  cls.updates = {}
  for k in range(_K):
    with open(device_round_lib.update_path(cls.round_dir, k), 'rb') as f:
      cls.updates[k] = f.read()
  with local_runtime.local_context():
    cls.row = rounds.aggregate(0, cls.round_dir)
    cls.w1_dev = rounds.state().weights
  with open(os.path.join(run_dir, device_round_lib.SUBDIR,
                         'round_0.json')) as f:
    cls.outcomes = json.load(f)['outcomes']


class _TierRoundChecks:
  """What every tiered device round must show (mixed into the classes)."""

  def test_global_model_matches_the_simulated_round(self):
    for dev, sim, w0 in zip(self.w1_dev, self.w1_sim, self.w0):
      self.assertGreater(np.abs(sim - w0).max(), 1e-3)  # the round moved it
      np.testing.assert_allclose(dev, sim, rtol=1e-4,
                                 atol=1e-5 * np.abs(sim).max())

  def test_every_tier_takes_part_and_every_device_is_accepted(self):
    self.assertEqual(sorted(set(self.tiers)), [0, 1, 2])
    self.assertEqual(
        [(o['slot'], o['status'], o['tier']) for o in self.outcomes],
        [(k, server_lib.ACCEPTED, _NAMES[t])
         for k, t in enumerate(self.tiers)])
    self.assertEqual(self.row['clients_reported'], _K)
    self.assertEqual(self.row['bytes_down'],
                     sum(s['broadcast_bytes'] for s in self.summaries))
    self.assertEqual(self.row['bytes_up'],
                     sum(s['update_bytes'] for s in self.summaries))

  def test_slots_json_names_each_slots_client_tier_and_trainer(self):
    self.assertEqual(self.slots['round'], 0)
    for entry, index, tier in zip(self.slots['slots'], self.picked,
                                  self.tiers):
      self.assertEqual(entry['client'], index)
      self.assertEqual(entry['tier'], _NAMES[tier])
      self.assertEqual(entry['model_folder'], f'tier_{_NAMES[tier]}')
      self.assertEqual(entry['broadcast_bytes'], os.path.getsize(
          os.path.join(self.round_dir, entry['broadcast'])))

  def test_each_device_received_and_sent_its_tiers_shapes(self):
    server = self.rounds.server
    for k, tier in enumerate(self.tiers):
      model = self.training.tiers[tier]
      want = [tuple(s) for s in model.plan.sub_shapes()]
      with open(os.path.join(self.model_dir, f'tier_{_NAMES[tier]}',
                             'manifest.json')) as f:
        manifest = json.load(f)
      self.assertEqual([tuple(w['shape']) for w in manifest['weights']], want)
      layout = server.layout(0, k)
      self.assertEqual(list(layout.shapes), want)
      with open(device_round_lib.broadcast_path(self.round_dir, k),
                'rb') as f:
        msg = messages.unpack(messages.BROADCAST, f.read(),
                              layout.broadcast_coder.specs(), layout.sizes)
      self.assertEqual(msg.round, 0)
      update, weight = server.decode_update(self.updates[k], 0, k)
      self.assertEqual([u.shape for u in update], want)
      n = self.data.client_size(self.data.client_ids[self.picked[k]])
      self.assertEqual(weight, 2 * n)  # TFF's NUM_EXAMPLES weighting
      self.assertTrue(self.summaries[k]['finite'])
    # The quarter-width tier's messages are the smallest.
    sizes = {t: s['broadcast_bytes']
             for t, s in zip(self.tiers, self.summaries)}
    self.assertLess(sizes[2], sizes[1])
    self.assertLess(sizes[1], sizes[0])

  def test_an_update_of_another_tiers_size_is_rejected(self):
    server = self.rounds.server
    high = int(np.flatnonzero(self.tiers == 0)[0])
    low = int(np.flatnonzero(self.tiers == 2)[0])
    with local_runtime.local_context():
      result = server.run_round(server.initial_state(self.w0),
                                {high: self.updates[high],
                                 low: self.updates[high]})
    by_slot = {o.slot: o for o in result.outcomes}
    self.assertEqual(by_slot[high].status, server_lib.ACCEPTED)
    self.assertEqual(by_slot[low].status, server_lib.REJECTED)
    self.assertIn("laid out for tier 'high'", by_slot[low].reason)
    self.assertIn(f"slot {low} of round 0 is tier 'low'",
                  by_slot[low].reason)
    self.assertEqual(result.state.round, 1)
    self.assertTrue(all(np.isfinite(w).all() for w in result.state.weights))


  def test_round_1_from_the_saved_state_scatters_onto_its_slices(self):
    """Round 1 starts from the checkpoint; an update lands on the slice the
    slot's device received that round (its aggregator's round counter
    followed the rounds) and nowhere else."""
    server = self.rounds.server
    with local_runtime.local_context():
      state = self.rounds.state()
      self.assertEqual(state.round, 1)
      # Round 2 of the simulation samples tiers high, low, mid, mid.
      slot = next(k for k in range(_K) if server.slot_tier(1, k) == 1)
      layout = server.layout(1, slot)
      step = 1e-3
      blob = messages.pack(
          messages.UPDATE, 1, [1, 2],
          [{'raw': np.full(n, step, np.float32)} for n in layout.sizes],
          layout.uplink_coder.specs(), layout.sizes, weight=5.0)
      result = server.run_round(state, {slot: blob})
    self.assertEqual([o.status for o in result.outcomes],
                     [server_lib.ACCEPTED])
    # One client: the mean is its update where it trained, 0 elsewhere;
    # the server's SGD (learning rate 1) subtracts it.
    cover = layout.slicing.plan.coverage(server.kept(1, slot))
    for w2, w1, c in zip(result.state.weights, state.weights, cover):
      np.testing.assert_allclose(w1 - w2, step * np.asarray(c), rtol=1e-4,
                                 atol=1e-7)


class NestedTierRoundTest(_TierRoundChecks, absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    _run_rounds(cls, _config())

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def test_nested_slots_train_the_first_units(self):
    server = self.rounds.server
    for k, tier in enumerate(self.tiers):
      kept = server.kept(0, k)
      plan = self.training.tiers[tier].plan
      for layer, units in kept.items():
        np.testing.assert_array_equal(
            units, tier_slicing.first_units(plan)[layer])


class RandomTierRoundTest(_TierRoundChecks, absltest.TestCase):
  """Random slices: each slot's tier slice is the round's mask of its key
  (its slot), as the simulation's tier pass keys it."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    _run_rounds(cls, _config(**{'tiers.slicing': 'random'}))

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def test_slots_of_one_tier_train_different_masks(self):
    server = self.rounds.server
    mids = np.flatnonzero(self.tiers == 1)
    self.assertLen(mids, 2)
    masks = [server.kept(0, int(k)) for k in mids]
    for layer in masks[0]:
      self.assertNotEqual(tuple(masks[0][layer].numpy()),
                          tuple(masks[1][layer].numpy()))


if __name__ == '__main__':
  absltest.main()
