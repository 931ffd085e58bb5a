"""`simulate` with algorithm=fedgkt: run-dir contract, bytes, resume."""

import io
import json
import os
import tempfile

from absl.testing import absltest
import numpy as np

from tests.tff_compress import process_utils
from tests.tff_compress import run_utils
from tff_compress import simulate_lib
from tff_compress.data import registry as data_registry
from tff_compress.gkt import process
from tff_compress.program import run_dir as run_dir_lib
from tff_compress.program import sampling

_CONFIG = os.path.join(process_utils.WORKSPACE, 'configs', 'fedgkt.py')


def _config():
  cfg = run_utils.config_file(_CONFIG, validate=False)
  cfg.rounds = 2
  # Seed 5 samples clients (5, 30) then (9, 30): client 30 trains in both
  # rounds, so resuming must restore its edge model and server logits.
  cfg.seed = 5
  cfg.data.num_clients = 40     # 100 digits per client
  cfg.clients_per_round = 2
  cfg.eval_every = 1
  cfg.eval_clients = 2
  cfg.client.batch_size = 50
  cfg.gkt.server_epochs = 1
  cfg.gkt.server_batch_size = 100
  return run_utils.override(cfg)


_rows = run_utils.metrics_rows
_weights = run_utils.final_weights


class _Stop(Exception):
  pass


class FedGktRunTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.ref_dir = os.path.join(
        tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir()), 'ref')
    cls.summary = simulate_lib.run(_config(), cls.ref_dir, out=io.StringIO())

  def test_run_dir_contract_and_measured_bytes(self):
    d, cfg = self.ref_dir, _config()
    for name in ('config.json', 'metrics.csv', 'summary.json', 'curves.png',
                 'final_weights.npz', 'tff_worker.log'):
      self.assertTrue(os.path.exists(os.path.join(d, name)), name)
    self.assertTrue(os.listdir(os.path.join(d, 'tb')))
    self.assertTrue(os.listdir(os.path.join(d, 'checkpoints')))
    rows = _rows(d)
    self.assertEqual(tuple(rows[0]), run_dir_lib.METRICS_COLUMNS)
    self.assertEqual([r['round'] for r in rows], ['1', '2'])
    data = data_registry.build_federated_data(cfg.data, seed=cfg.seed)
    sizes = [data.client_size(c) for c in data.client_ids]
    settings = process.GktSpec.create(
        cfg.gkt, model_name=cfg.model.name, epochs=cfg.client.epochs,
        batch_size=cfg.client.batch_size, input_shape=data.input_shape,
        num_classes=data.num_classes, num_clients=len(sizes), seed=cfg.seed)
    report = process.model_report(settings)
    feature = 28 * 28 * 16 * 4
    for r in rows:
      picked = sampling.sample_clients(
          len(sizes), cfg.clients_per_round, cfg.seed, int(r['round']))
      n = [sizes[c] for c in picked]
      # float32 feature map + 10 float32 logits + int32 label per sample,
      # and each client's int32 key; down: 10 float32 logits per sample.
      self.assertEqual(int(r['bytes_up']),
                       sum(n) * (feature + 40 + 4) + 4 * len(n))
      self.assertEqual(int(r['bytes_down']), sum(n) * 40)
      self.assertAlmostEqual(
          float(r['client_flops']),
          np.mean([report.client_round_flops(k, 1) for k in n]), places=0)
      self.assertBetween(float(r['eval_accuracy']), 0.0, 1.0)
      self.assertEqual(r['epsilon'], '')
    with open(os.path.join(d, 'summary.json')) as f:
      summary = json.load(f)
    self.assertEqual(summary['algorithm'], 'fedgkt')
    self.assertEqual(summary['edge_params'], report.edge_params)
    self.assertEqual(summary['whole_model_params'], report.whole_params)
    self.assertAlmostEqual(summary['params_ratio_whole_vs_edge'],
                           report.whole_params / report.edge_params)
    self.assertEqual(summary['feature_bytes_per_sample'], feature)
    self.assertIn('final_edge_eval_accuracy', summary)
    self.assertLen(_weights(d), len(settings.server_model().weights))

  def test_interrupted_run_resumes_bit_identically(self):
    run_dir = self.create_tempdir().full_path

    def stop(round_num):
      if round_num == 1:
        raise _Stop()

    with self.assertRaises(_Stop):
      simulate_lib.run(_config(), run_dir, out=io.StringIO(),
                       after_round=stop)
    self.assertLen(_rows(run_dir), 1)
    out = io.StringIO()
    simulate_lib.run(_config(), run_dir, out=out)
    self.assertIn('resuming after round 1', out.getvalue())
    strip = lambda rows: [{k: v for k, v in r.items() if k != 'round_seconds'}
                          for r in rows]
    self.assertEqual(strip(_rows(run_dir)), strip(_rows(self.ref_dir)))
    for a, b in zip(_weights(run_dir), _weights(self.ref_dir)):
      np.testing.assert_array_equal(a, b)


if __name__ == '__main__':
  absltest.main()
