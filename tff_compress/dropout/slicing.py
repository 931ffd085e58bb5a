"""Federated Dropout's slices: a fresh random submodel per (round, mask key).

`MaskSlicing` is the `learning.keyed.Slicing` of a `SubmodelPlan`: the mask
key of slot k is k (`dropout.mask=per_client`) or 0 (`per_round`); the kept
units are the plan's `kept_indices` of `submodel.mask_seed(seed, round,
key)`, so masks are a function of (config seed, round, key) only — a
resumed run, the simulation and the device-round server draw the same.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from tff_compress.dropout import submodel
from tff_compress.learning import keyed

# Folded into a mask's seed to seed the codec of the slice sent to it.
BROADCAST_DIRECTION = 1


class MaskSlicing(keyed.Slicing):
  """Random submodels of `plan`, one mask per slot or one per round."""

  def __init__(self, plan: submodel.SubmodelPlan, seed: int,
               per_client_masks: bool, clients_per_round: int):
    self.plan = plan
    self._seed = int(seed)
    self._per_client = bool(per_client_masks)
    self._max_key = int(clients_per_round) - 1 if per_client_masks else 0

  @property
  def max_key(self) -> int:
    return self._max_key

  def mask_key(self, slot):
    slot = tf.cast(slot, tf.int32)
    return slot if self._per_client else tf.zeros_like(slot)

  def kept(self, round_num, key) -> dict:
    """{layer: kept unit indices} of mask `key` in round `round_num`."""
    return self.plan.kept_indices(
        submodel.mask_seed(self._seed, round_num, key))

  def gather(self, trainable: Sequence[tf.Tensor], round_num, key):
    return self.plan.gather(trainable, self.kept(round_num, key))

  def scatter(self, sliced: Sequence[tf.Tensor], round_num, key):
    return self.plan.scatter(sliced, self.kept(round_num, key))

  def coverage(self, round_num, key):
    return self.plan.coverage(self.kept(round_num, key))

  def codec_seed(self, round_num, key) -> tf.Tensor:
    s = submodel.mask_seed(self._seed, round_num, key)
    return tf.random.experimental.stateless_fold_in(
        s, tf.constant(BROADCAST_DIRECTION, tf.int64))
