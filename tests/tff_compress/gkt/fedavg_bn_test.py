"""FedAvg-BN: the example-weighted average of every variable, in TFF."""

import collections

from absl.testing import absltest
import numpy as np
import tensorflow_federated as tff

from tff_compress.fedavg import settings as fedavg_settings
from tff_compress.gkt import fedavg_bn
from tff_compress.learning import task as task_lib
from tff_compress.models import resnet
from tff_compress.runtime import local as local_runtime

_SHAPE = (8, 8, 1)
_SIZES = (5, 9)


class FedAvgBnTest(absltest.TestCase):

  def test_round_is_weighted_average_of_all_variables(self):
    client = fedavg_settings.ClientSettings(learning_rate=0.05, batch_size=4)
    task = task_lib.Task(
        keras_model_fn=lambda: resnet.build_edge_classifier(_SHAPE, 3, 1),
        input_spec=None, num_params=0, train_flops_per_example=0)
    p = fedavg_bn.build_fedavg_bn(
        client, tff.learning.optimizers.build_sgdm(1.0), task, _SHAPE)
    rng = np.random.default_rng(0)
    inputs = [collections.OrderedDict(
        x=rng.random((n, *_SHAPE), dtype=np.float32),
        y=rng.integers(0, 3, n).astype(np.int32),
        seed=np.array([1, i], np.int64)) for i, n in enumerate(_SIZES)]
    with local_runtime.local_context():
      state = p.initialize()
      new_state, m = p.next(state, inputs)
      outs = [p.client_update(state['weights'], inp) for inp in inputs]
      ev = p.evaluate(new_state['weights'], [collections.OrderedDict(
          x=inp['x'], y=inp['y']) for inp in inputs])
    w = np.array(_SIZES, np.float64) / sum(_SIZES)
    old = state['weights']
    for i, v in enumerate(new_state['weights']['trainable']):
      mean_delta = sum(wi * o['update']['trainable'][i]
                       for wi, o in zip(w, outs))
      np.testing.assert_allclose(v, old['trainable'][i] + mean_delta,
                                 rtol=1e-5, atol=1e-6)
    for i, v in enumerate(new_state['weights']['non_trainable']):
      mean = sum(wi * o['update']['non_trainable'][i]
                 for wi, o in zip(w, outs))
      np.testing.assert_allclose(v, mean, rtol=1e-5, atol=1e-6)
    # The batch-norm moving statistics left their initial values.
    self.assertFalse(np.allclose(new_state['weights']['non_trainable'][0],
                                 old['non_trainable'][0]))
    floats = sum(np.size(a) for a in old['trainable'] + old['non_trainable'])
    self.assertEqual(m['bytes_down'], len(_SIZES) * 4 * floats)
    self.assertEqual(m['bytes_up'], len(_SIZES) * (4 * floats + 4))
    self.assertEqual(m['train']['count'], sum(_SIZES))
    self.assertEqual(ev['count'], sum(_SIZES))


if __name__ == '__main__':
  absltest.main()
