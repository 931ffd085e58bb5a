"""Fine-tuning evaluation: TFF's computation, its FedPer variant, the figures."""

import collections

from absl.testing import absltest
import numpy as np
import tensorflow as tf

from tests.tff_compress import run_utils
from tests.tff_compress.learning import learning_testing
from tests.tff_compress.personalization import personalization_testing
from tff_compress.fedavg import process
from tff_compress.personalization import evaluation
from tff_compress.personalization import local_layers
from tff_compress.personalization import split as split_lib
from tff_compress.runtime import local as local_runtime

SIZES = [40, 23, 31, 12]
SEED = 5
ROUND = 3


def _settings(**overrides):
  cfg = run_utils.smoke_config(**{
      'personalization.evaluate': True, 'personalization.epochs': 2,
      'personalization.batch_size': 8, 'personalization.learning_rate': 0.1,
      **{f'personalization.{k}': v for k, v in overrides.items()}})
  return run_utils.settings(cfg).personalization


def _manual(task, held, p, client, weights, tuned=None):
  """(received, fine-tuned) (loss, accuracy) of one client, in eager TF."""
  model = task.keras_model_fn()
  for v, w in zip(model.weights, weights):
    v.assign(w)
  tx, ty = held.held_out(client)
  loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

  def score():
    logits = model(tx, training=False)
    return (float(loss(ty, logits)),
            float(np.mean(np.argmax(logits, -1) == ty)))

  before = score()
  x, y = held.train.client_arrays(held.train.client_ids[client])
  order = split_lib.finetune_seed(SEED, ROUND, client)
  ds = personalization_testing.finetune_batches(x, y, p, order)
  variables = model.trainable_weights
  if tuned is not None:
    variables = [variables[i] for i in tuned]
  for bx, by in ds:
    with tf.GradientTape() as tape:
      value = loss(by, model(bx, training=True))
    for v, g in zip(variables, tape.gradient(value, variables)):
      v.assign(v - p.learning_rate * g)
  return before, score()


class FinetuneEvaluationTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.task = learning_testing.small_task(hidden=8)
    cls.held = split_lib.split_clients(
        personalization_testing.fake_data(SIZES), 0.25, SEED)
    cls.initial_fn = process.build_initial_weights_fn(cls.task)
    cls.split = local_layers.LayerSplit.of(cls.task.keras_model_fn(), 'head')

  def _evaluation(self, p, split=None, finetune=True):
    return evaluation.FinetuneEvaluation(p, self.task, self.held, SEED,
                                         rounds=10, split=split,
                                         finetune=finetune)

  def test_scores_equal_eager_fine_tuning_of_each_client(self):
    p = _settings()
    ev = self._evaluation(p)
    with local_runtime.local_context():
      weights = self.initial_fn()
      scores = ev.run(ROUND, weights)
    flat = [np.asarray(w) for w in tf.nest.flatten(weights)]
    np.testing.assert_array_equal(scores.clients, np.arange(len(SIZES)))
    for i in range(len(SIZES)):
      (g_loss, g_acc), (f_loss, f_acc) = _manual(self.task, self.held, p, i,
                                                 flat)
      self.assertAlmostEqual(scores.global_accuracy[i], g_acc, places=6)
      self.assertAlmostEqual(scores.global_loss[i], g_loss, places=5)
      self.assertAlmostEqual(scores.finetuned_accuracy[i], f_acc, places=6)
      self.assertAlmostEqual(scores.finetuned_loss[i], f_loss, places=4)
      self.assertEqual(scores.test_examples[i],
                       len(self.held.held_out(i)[1]))
    self.assertTrue(np.any(scores.finetuned_loss < scores.global_loss))

  def test_head_only_fine_tuning(self):
    p = _settings(layers='head')
    ev = self._evaluation(p)
    with local_runtime.local_context():
      weights = self.initial_fn()
      scores = ev.run(ROUND, weights)
    flat = [np.asarray(w) for w in tf.nest.flatten(weights)]
    for i in range(len(SIZES)):
      _, (f_loss, _) = _manual(self.task, self.held, p, i, flat,
                               tuned=self.split.local)
      self.assertAlmostEqual(scores.finetuned_loss[i], f_loss, places=4)

  def test_local_variant_equals_tff_computation_with_the_server_head(self):
    p = _settings(optimizer='adam', learning_rate=0.01)
    with local_runtime.local_context():
      weights = self.initial_fn()
      head = local_layers.initial_local_layers(weights, self.split)
      tff_scores = self._evaluation(p).run(ROUND, weights)
      ours = self._evaluation(p, self.split).run(ROUND, weights,
                                                 [head] * len(SIZES))
    for name in ('global_loss', 'global_accuracy', 'finetuned_loss',
                 'finetuned_accuracy'):
      np.testing.assert_array_equal(getattr(ours, name),
                                    getattr(tff_scores, name), err_msg=name)

  def test_local_variant_starts_from_each_clients_own_layers(self):
    p = _settings()
    rng = np.random.default_rng(0)
    with local_runtime.local_context():
      weights = self.initial_fn()
      heads = [[rng.normal(size=(8, 10)).astype(np.float32),
                rng.normal(size=(10,)).astype(np.float32)]
               for _ in SIZES]
      ev = self._evaluation(p, self.split)
      scores = ev.run(ROUND, weights, heads)
      received = ev.received_only(weights, heads)
    shared = [np.asarray(w) for w in weights.trainable][:2]
    for i, head in enumerate(heads):
      (g_loss, _), (f_loss, _) = _manual(self.task, self.held, p, i,
                                         shared + head)
      self.assertAlmostEqual(scores.global_loss[i], g_loss, places=5)
      self.assertAlmostEqual(scores.finetuned_loss[i], f_loss, places=4)
      self.assertAlmostEqual(received.global_loss[i], g_loss, places=5)
    n = received.test_examples
    self.assertAlmostEqual(
        received.pooled()['eval_accuracy'],
        float(np.sum(received.global_accuracy * n) / n.sum()))

  def test_local_variant_sends_no_local_layer(self):
    comp = evaluation.build_local_evaluation(self.task, _settings(),
                                             self.split, len(SIZES))
    moved = personalization_testing.moved_tensor_shapes(comp)
    shapes = set().union(*moved.values())
    self.assertNotIn((8, 10), shapes)
    self.assertIn((784, 8), moved['federated_broadcast'])

  def test_a_sample_of_clients_evaluates(self):
    ev = self._evaluation(_settings(eval_clients=2))
    np.testing.assert_array_equal(
        ev.clients, split_lib.evaluation_clients(len(SIZES), 2, SEED))
    with local_runtime.local_context():
      scores = ev.run(ROUND, self.initial_fn())
    self.assertLen(scores.global_accuracy, 2)
    rows = scores.table(ROUND)
    self.assertEqual([r['client'] for r in rows], ev.clients.tolist())
    self.assertEqual(set(rows[0]), {
        'round', 'client', 'train_examples', 'test_examples', 'global_loss',
        'global_accuracy', 'finetuned_loss', 'finetuned_accuracy'})

  def test_schedule(self):
    ev = self._evaluation(_settings(every=4))
    self.assertEqual([r for r in range(1, 11) if ev.due(r)], [4, 8, 10])
    ev = self._evaluation(_settings(every=0))
    self.assertEqual([r for r in range(1, 11) if ev.due(r)], [10])


class FiguresTest(absltest.TestCase):

  def test_distribution(self):
    g = np.array([0.5, 0.2, 0.9, 0.4, 0.6])
    f = np.array([0.7, 0.2, 0.8, 0.9, 0.5])
    scores = evaluation.Scores(np.arange(5), np.ones(5), np.ones(5),
                               np.zeros(5), g, np.zeros(5), f)
    d = scores.distribution()
    self.assertAlmostEqual(d['p13n_global_mean'], 0.52)
    self.assertAlmostEqual(d['p13n_finetuned_mean'], 0.62)
    # Linear interpolation between order statistics: 0.2 + 0.4 * 0.2.
    self.assertAlmostEqual(d['p13n_global_p10'], 0.28)
    self.assertAlmostEqual(d['p13n_finetuned_p90'], 0.86)
    # Strictly worse: 0.9 -> 0.8 and 0.6 -> 0.5 (0.2 -> 0.2 is not).
    self.assertAlmostEqual(d['p13n_worse_share'], 0.4)
    self.assertEqual(set(d), set(evaluation.COLUMNS))

  def test_summary_block_is_the_last_evaluation(self):
    def row(r, g):
      values = {c: '' for c in evaluation.COLUMNS}
      if g is not None:
        values.update({c: str(g) for c in evaluation.COLUMNS})
        values['p13n_finetuned_mean'] = str(g + 0.25)
      return collections.OrderedDict(round=str(r), **values)

    rows = [row(1, None), row(2, 0.5), row(3, None), row(4, 0.625),
            row(5, None)]
    block = evaluation.summary_block(rows, 'the global model')
    self.assertEqual(block['round'], 4)
    self.assertEqual(block['global_mean'], 0.625)
    self.assertEqual(block['gain'], 0.25)
    self.assertEqual(block['baseline'], 'the global model')
    self.assertIsNone(evaluation.summary_block(rows[:1], 'x'))


if __name__ == '__main__':
  absltest.main()
