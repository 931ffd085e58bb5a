"""A pruned run end to end: the achieved sparsity in summary.json, masks
counted once per client and change in bytes_down, resume across a mask
update bit-identical, units shrink client FLOPs."""

import io
import os
import shutil

from absl.testing import absltest
import numpy as np

from tests.tff_compress import run_utils
from tff_compress import simulate_lib
from tff_compress.data import registry as data_registry
from tff_compress.models import flops
from tff_compress.models import registry as model_registry
from tff_compress.program import sampling
from tff_compress.pruning import masks
from tff_compress.pruning import schedule as schedule_lib

_ROUNDS = 5
_STOP_AFTER = 2  # mask updates at rounds 2 and 3: resume inside the ramp


class _Stop(Exception):
  pass


def _config(**overrides):
  return run_utils.smoke_config(**{
      'rounds': _ROUNDS, 'eval_every': _ROUNDS, 'pruning.target': 0.5,
      'pruning.begin_round': 1, 'pruning.end_round': 3,
      'pruning.frequency': 1, **overrides})


def _run(config, name, stop_after=None):
  run_dir = os.path.join(absltest.get_default_test_tmpdir(), name)
  shutil.rmtree(run_dir, ignore_errors=True)
  if stop_after is not None:
    def stop(round_num):
      if round_num == stop_after:
        raise _Stop()
    with absltest.TestCase().assertRaises(_Stop):
      simulate_lib.run(config, run_dir, out=io.StringIO(), after_round=stop)
  log = io.StringIO()
  summary = simulate_lib.run(config, run_dir, out=log)
  return run_dir, summary, log.getvalue()


class SimulatePruningTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.cfg = _config()
    cls.run_dir, cls.summary, cls.log = _run(cls.cfg, 'pruned', _STOP_AFTER)
    cls.rows = run_utils.metrics_rows(cls.run_dir)

  def test_resume_across_a_mask_update_is_bit_identical(self):
    self.assertIn(f'resuming after round {_STOP_AFTER}', self.log)
    other_dir, summary, _ = _run(self.cfg, 'pruned_uninterrupted')
    for a, b in zip(run_utils.final_weights(self.run_dir),
                    run_utils.final_weights(other_dir)):
      np.testing.assert_array_equal(a, b)
    for a, b in zip(self.rows, run_utils.metrics_rows(other_dir)):
      for key in ('train_loss', 'bytes_down', 'bytes_up', 'eval_accuracy'):
        self.assertEqual(a[key], b[key], key)
    self.assertEqual(summary['pruning'], self.summary['pruning'])

  def test_summary_reports_the_achieved_sparsity(self):
    p = self.summary['pruning']
    self.assertEqual(p['structure'], 'unstructured')
    self.assertEqual(p['layers'], ['dense1', 'logits'])
    self.assertEqual(p['target_sparsity'], 0.5)
    self.assertEqual([u['round'] for u in p['mask_updates']], [2, 3])
    weights = run_utils.final_weights(self.run_dir)  # [k1, b1, k2, b2]
    zeros = sum(int(np.sum(weights[i] == 0)) for i in (0, 2))
    self.assertEqual(p['achieved_sparsity'],
                     zeros / (weights[0].size + weights[2].size))
    self.assertEqual(p['achieved_sparsity'], 0.5)
    self.assertEqual(p['nonzero_params'],
                     sum(int(np.count_nonzero(w)) for w in weights))
    self.assertIn('pruning dense1, logits to 50.0 %', self.log)

  def test_bytes_down_counts_payload_and_mask_deliveries(self):
    cfg = self.cfg
    model = model_registry.build_model('dense', (28, 28, 1), 10)
    settings = run_utils.settings(cfg)
    layout = masks.build_layout(model, settings.pruning)
    schedule = schedule_lib.Schedule.from_settings(settings.pruning)
    data = data_registry.build_federated_data(cfg.data, seed=cfg.seed)
    k = cfg.clients_per_round
    seen = {}  # client -> the phase of its last broadcast
    for row in self.rows:
      r = int(row['round'])
      picked = sampling.sample_clients(len(data.client_ids), k, cfg.seed, r)
      phase = schedule.index(r)
      sparsity = schedule.phases[phase].sparsity
      floats = sum(int(np.prod(s)) for s in layout.full_shapes)
      floats -= sum(int(np.prod(s)) for s in layout.mask_shapes)
      floats += sum(layout.kept(sparsity))
      recipients = 0 if sparsity == 0 else sum(
          seen.get(int(c)) != phase for c in picked)
      for c in picked:
        seen[int(c)] = phase
      self.assertEqual(
          int(row['bytes_down']),
          k * 4 * floats + recipients * layout.mask_message_bytes(), r)
      self.assertEqual(int(row['bytes_up']), k * (4 * floats + 4), r)
    # The masks were sent, and not to every client every round.
    self.assertLess(int(self.rows[-1]['bytes_down']),
                    int(self.rows[2]['bytes_down']))

  def test_units_shrink_client_flops(self):
    cfg = _config(**{'rounds': 3, 'eval_every': 3,
                     'pruning.structure': 'units', 'pruning.end_round': 2})
    run_dir, summary, _ = _run(cfg, 'units')
    p = summary['pruning']
    self.assertEqual(p['units'], {'dense1': 64})
    self.assertEqual(p['kept_units'], {'dense1': 32})
    self.assertEqual(summary['client_model_params'],
                     p['pruned_model_params'])
    self.assertEqual(p['pruned_model_params'], 784 * 32 + 32 + 32 * 10 + 10)
    data = data_registry.build_federated_data(cfg.data, seed=cfg.seed)
    sizes = [data.client_size(c) for c in data.client_ids]
    per_example = {
        64: flops.training_flops_per_example(
            model_registry.build_model('dense', (28, 28, 1), 10)),
        32: p['pruned_model_train_flops_per_example']}
    for row, width in zip(run_utils.metrics_rows(run_dir), (64, 32, 32)):
      picked = sampling.sample_clients(len(sizes), cfg.clients_per_round,
                                       cfg.seed, int(row['round']))
      examples = np.mean([sizes[c] for c in picked])
      self.assertAlmostEqual(float(row['client_flops']),
                             examples * per_example[width], delta=1.0)
    self.assertLess(per_example[32], per_example[64] / 1.9)

if __name__ == '__main__':
  absltest.main()
