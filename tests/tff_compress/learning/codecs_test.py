"""Encoded broadcast and uplink inside real TFF processes."""

import collections

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tests.tff_compress import run_utils
from tests.tff_compress.learning import learning_testing
from tff_compress.encoders import settings as codec_settings
from tff_compress.encoders import structure
from tff_compress.fedavg import process
from tff_compress.learning import aggregators
from tff_compress.learning import distributors
from tff_compress.runtime import local as local_runtime


def _task():
  return learning_testing.small_task(hidden=32)


_datasets = learning_testing.random_datasets


def _cfg(lr=0.1, **codec):
  return run_utils.default_config(
      **{'model.name': 'dense', 'client.learning_rate': lr},
      **{key.replace('__', '.'): value for key, value in codec.items()})


def _flat(weights):
  return [np.asarray(w) for w in tf.nest.flatten(weights)]


def _expected_payload_bytes(value_type, codec):
  """Bytes of the encoded message computed eagerly, tensor by tensor."""
  coder = structure.StructureCodec(value_type, codec)
  zeros = tff.types.structure_from_tensor_type_tree(
      lambda t: tf.random.stateless_normal(t.shape, [1, 2]), value_type)
  message = coder.encode(zeros, tf.constant([3, 4], tf.int64))
  total = 16  # the int64[2] seed
  for entry in message:
    for t in entry.values():
      total += int(tf.size(t)) * t.dtype.size
  return total


class EncodedBroadcastTest(parameterized.TestCase):

  @parameterized.parameters(('hadamard', 8, 1.0), ('kashin', 2, 1.0),
                            ('none', 4, 0.5))
  def test_bytes_down_are_the_encoded_tensors(self, transform, bits, sub):
    task = _task()
    cfg = _cfg(broadcast__transform=transform, broadcast__bits=bits,
               broadcast__subsample=sub)
    lp = process.build_learning_process(run_utils.training(cfg), task)
    mw_type = process.build_initial_weights_fn(task).type_signature.result
    codec = run_utils.settings(cfg).broadcast
    per_client = _expected_payload_bytes(mw_type, codec)
    with local_runtime.local_context():
      out = lp.next(lp.initialize(), _datasets([8, 8, 8]))
    self.assertEqual(int(out.metrics['distributor']['bytes_down']),
                     3 * per_client)
    # The big kernel dominates: the ratio is near 32/bits (x 1/sub).
    ratio = 4 * task.num_params / per_client
    self.assertGreater(ratio, 0.6 * 32 / bits / sub if transform != 'kashin'
                       else 0.3 * 32 / bits)

  def test_update_is_relative_to_received_weights(self):
    """lr=0: clients send zero updates, so a lossy broadcast moves nothing."""
    task = _task()
    lp = process.build_learning_process(run_utils.training(
        _cfg(lr=1e-30, broadcast__transform='hadamard', broadcast__bits=1)),
        task)
    with local_runtime.local_context():
      state = lp.initialize()
      before = _flat(lp.get_model_weights(state))
      state = lp.next(state, _datasets([8, 8])).state
      after = _flat(lp.get_model_weights(state))
    for a, b in zip(before, after):
      np.testing.assert_allclose(a, b, atol=1e-6)

  def test_same_state_same_broadcast(self):
    task = _task()
    lp = process.build_learning_process(run_utils.training(
        _cfg(broadcast__transform='kashin', broadcast__bits=2)), task)
    with local_runtime.local_context():
      state = lp.initialize()
      a = _flat(lp.get_model_weights(lp.next(state, _datasets([8])).state))
      b = _flat(lp.get_model_weights(lp.next(state, _datasets([8])).state))
    for x, y in zip(a, b):
      np.testing.assert_array_equal(x, y)


class EncodedUplinkTest(parameterized.TestCase):

  def test_aggregate_is_unbiased(self):
    """Mean over rounds of the encoded weighted mean -> the exact mean."""
    value_type = tff.types.to_type(
        collections.OrderedDict(w=tff.TensorType(np.float32, [4096])))
    codec = codec_settings.UplinkCodec(transform='hadamard', bits=2,
                                       min_size=1)
    agg = aggregators.encoded(codec, seed=0).create(
        value_type, tff.TensorType(np.float32))
    rng = np.random.default_rng(0)
    values = [collections.OrderedDict(w=rng.normal(size=4096).astype(
        np.float32)) for _ in range(3)]
    weights = [1.0, 2.0, 5.0]
    exact = sum(w * v['w'] for w, v in zip(weights, values)) / sum(weights)
    rounds = 200
    with local_runtime.local_context():
      state = agg.initialize()
      outs = []
      for _ in range(rounds):
        out = agg.next(state, values, weights)
        state = out.state
        outs.append(out.result['w'])
    outs = np.stack(outs)
    single_err = np.std(outs - exact, axis=0)
    self.assertGreater(single_err.mean(), 1e-3)  # the codec is lossy
    # Mean of `rounds` independent decodes: error ~ std / sqrt(rounds).
    mean_err = np.abs(outs.mean(axis=0) - exact)
    bound = 5 * single_err / np.sqrt(rounds) + 1e-6
    self.assertLess(np.mean(mean_err > bound), 0.001)

  def test_bytes_up_and_plugs_into_tff_builder(self):
    task = _task()
    mw_type = process.build_initial_weights_fn(task).type_signature.result
    codec = codec_settings.UplinkCodec(transform='hadamard', bits=4)
    factory = aggregators.encoded(codec, seed=7)
    lp = tff.learning.algorithms.build_weighted_fed_avg(
        task.model_fn,
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1),
        model_aggregator=factory,
        model_distributor=distributors.build_encoded_broadcast(
            mw_type, codec_settings.BroadcastCodec('kashin', 8), seed=7))
    per_client = _expected_payload_bytes(mw_type.trainable, codec) + 4
    with local_runtime.local_context():
      out = lp.next(lp.initialize(), _datasets([8, 16]))
    self.assertEqual(int(out.metrics['aggregator']['bytes_up']),
                     2 * per_client)
    self.assertGreater(4 * task.num_params / per_client, 5)
    self.assertIn('bytes_down', out.metrics['distributor'])

  def test_16_bits_close_to_float32(self):
    task = _task()
    plain = process.build_learning_process(run_utils.training(_cfg()), task)
    coded = process.build_learning_process(run_utils.training(
        _cfg(uplink__transform='hadamard', uplink__bits=16,
             broadcast__transform='hadamard', broadcast__bits=16)), task)
    data = _datasets([16, 16, 16])
    with local_runtime.local_context():
      a = _flat(plain.get_model_weights(
          plain.next(plain.initialize(), data).state))
      b = _flat(coded.get_model_weights(
          coded.next(coded.initialize(), data).state))
    for x, y in zip(a, b):
      np.testing.assert_allclose(x, y, atol=2e-3)


if __name__ == '__main__':
  absltest.main()
