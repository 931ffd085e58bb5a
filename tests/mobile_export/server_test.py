"""The device-round server: hostile update messages, the run's aggregation.

Update messages are crafted here as a phone (or an attacker) would send them
— valid layout and checksum, arbitrary contents — and the server must zero
or reject what the simulation's aggregation would not accept, keep the model
finite, and count every device's outcome.
"""

from absl.testing import absltest
import numpy as np

from mobile_export import messages
from mobile_export import server as server_lib
from tests.tff_compress import run_utils
from tests.tff_compress import runtime_testing
from tff_compress.learning import task as task_lib
from tff_compress.data import registry as data_registry

_K = 4


def _server(**overrides):
  cfg = run_utils.smoke_config(clients_per_round=_K, **overrides)
  data = data_registry.build_federated_data(cfg.data, seed=cfg.seed)
  task = task_lib.build_task(cfg.model.name, data, seed=cfg.seed)
  model = task.keras_model_fn()
  return (server_lib.DeviceRoundServer(run_utils.settings(cfg), model),
          [np.asarray(w) for w in model.get_weights()])


def _update(server, values, weight, round_index=0):
  """A well-formed float32 update message of `values` (device shapes)."""
  tensors = [{'raw': np.asarray(v, np.float32).reshape(-1)} for v in values]
  return messages.pack(messages.UPDATE, round_index, [1, 2], tensors,
                       server.uplink_coder.specs(),
                       [int(np.prod(s)) for s in server.device_shapes],
                       weight=weight)


def _small(server, scale, seed):
  rng = np.random.default_rng(seed)
  return [rng.normal(size=s).astype(np.float32) * scale
          for s in server.device_shapes]


class HostileUpdatesTest(runtime_testing.LocalRuntimeTestCase):


  def test_huge_and_non_finite_updates_are_zeroed_not_applied(self):
    server, w0 = _server()
    good = [_small(server, 1e-3, k) for k in range(2)]
    huge = [np.full(s, 1e4, np.float32) for s in server.device_shapes]
    nan = _small(server, 1e-3, 5)
    nan[0][0, 0] = np.nan
    updates = {0: _update(server, good[0], 10.0),
               1: _update(server, huge, 10.0),    # finite, valid checksum
               2: _update(server, nan, 10.0),
               3: _update(server, good[1], 30.0)}
    result = server.run_round(server.initial_state(w0), updates)
    status = {o.slot: o.status for o in result.outcomes}
    # The wire format refuses non-finite floats; a finite but huge update
    # passes it and the aggregation's zeroing stage drops it.
    self.assertEqual(status, {0: 'accepted', 1: 'zeroed', 2: 'rejected',
                              3: 'accepted'})
    self.assertIn('zeroing_norm', result.outcomes[1].reason)
    self.assertIn('not finite', result.outcomes[2].reason)
    # The mean is the example-weighted mean of the two honest updates: the
    # zeroed device left it (weight zeroed), FedAvg applies it (lr 1).
    expected = [(10 * a + 30 * b) / 40 for a, b in zip(*good)]
    for w, w_before, u in zip(result.state.weights, w0, expected):
      self.assertTrue(np.isfinite(w).all())
      np.testing.assert_allclose(w_before - w, u, rtol=1e-5, atol=1e-7)
    self.assertEqual(int(result.measurements['zeroed']), 1)

  def test_unusable_messages_are_rejected_with_the_reason(self):
    server, w0 = _server()
    ok = _update(server, _small(server, 1e-3, 0), 8.0)
    corrupt = bytearray(ok)
    corrupt[40] ^= 0xFF
    updates = {
        0: ok,
        1: bytes(corrupt),
        2: _update(server, _small(server, 1e-3, 1), 1e12),   # absurd weight
        3: _update(server, _small(server, 1e-3, 2), 8.0, round_index=7),
        9: ok,                                              # no such slot
    }
    result = server.run_round(server.initial_state(w0), updates)
    by_slot = {o.slot: o for o in result.outcomes}
    self.assertEqual(by_slot[0].status, 'accepted')
    for slot, words in ((1, 'checksum'), (2, 'weight'), (3, 'round 7'),
                        (9, 'slot 9')):
      self.assertEqual(by_slot[slot].status, 'rejected', slot)
      self.assertIn(words, by_slot[slot].reason, slot)
    # Only the accepted update moved the model.
    for w, w_before, u in zip(result.state.weights, w0,
                              _small(server, 1e-3, 0)):
      np.testing.assert_allclose(w_before - w, u, rtol=1e-5, atol=1e-7)

  def test_a_round_nobody_passes_leaves_the_model(self):
    server, w0 = _server()
    result = server.run_round(server.initial_state(w0), {0: b'garbage'})
    self.assertEqual(result.outcomes[0].status, 'rejected')
    self.assertIsNone(result.mean_update)
    self.assertEqual(result.state.round, 1)
    for a, b in zip(result.state.weights, w0):
      np.testing.assert_array_equal(a, b)

  def test_dropout_masks_stay_in_step_after_a_round_nobody_passes(self):
    """The aggregation runs in a round without a usable update too, so its
    round counter, which picks the masks it scatters with, stays that of
    the broadcasts: round 1's update lands on round 1's submodel."""
    server, w0 = _server(**{'dropout.keep': 0.5})
    state = server.run_round(server.initial_state(w0), {0: b'garbage'}).state
    update = _small(server, 1e-3, 0)
    result = server.run_round(
        state, {1: _update(server, update, 5.0, round_index=1)})
    self.assertEqual(result.outcomes[0].status, 'accepted')
    expected = server.plan.scatter(update, server.kept(1, 1))
    for w, w_before, u in zip(result.state.weights, w0, expected):
      np.testing.assert_allclose(w_before - w, u, rtol=1e-5, atol=1e-7)

  def test_dp_clips_a_device_update_on_the_server(self):
    """Under DP-FedAvg the run's DP aggregation bounds what a phone adds:
    a device sending a large (but not zeroed) update moves the model by at
    most C / K."""
    server, w0 = _server(**{'dp.mode': 'user', 'dp.noise_multiplier': 0.0,
                            'dp.clip': 0.01})
    big = _small(server, 0.05, 3)  # norm >> C, << zeroing_norm
    result = server.run_round(server.initial_state(w0),
                              {0: _update(server, big, 5.0)})
    self.assertEqual(result.outcomes[0].status, 'accepted')
    moved = np.sqrt(sum(float(np.sum((a - b) ** 2))
                        for a, b in zip(result.state.weights, w0)))
    self.assertAlmostEqual(moved, 0.01 / _K, delta=1e-6)

  def test_dropout_devices_hold_submodels(self):
    server, w0 = _server(**{'dropout.keep': 0.5})
    self.assertLess(sum(np.prod(s) for s in server.device_shapes),
                    0.6 * sum(w.size for w in w0))
    updates = {k: _update(server, _small(server, 1e-3, k), 5.0)
               for k in range(_K)}
    huge = [np.full(s, 1e4, np.float32) for s in server.device_shapes]
    updates[2] = _update(server, huge, 5.0)
    result = server.run_round(server.initial_state(w0), updates)
    self.assertEqual([o.status for o in result.outcomes],
                     ['accepted', 'accepted', 'zeroed', 'accepted'])
    self.assertTrue(all(np.isfinite(w).all() for w in result.state.weights))
    self.assertEqual(int(result.measurements['zeroed']), 1)


if __name__ == '__main__':
  absltest.main()
