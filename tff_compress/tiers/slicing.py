"""A tier's slice of the global model: its plan, its slicing, its deployment.

* **Plan.** A tier of width p keeps k = ⌈p n⌉ of the n units/filters of
  every hidden layer (per-layer overrides apply), through the same
  `dropout.submodel.SubmodelPlan` Federated Dropout uses: the tier's model
  is the registry's model built with those widths, so its FLOPs, parameters
  and payloads are those of a real smaller network.
* **Nested slicing** (`NestedSlicing`, HeteroFL): the kept units are the
  first k of each layer, whatever the round or client, so tier t's model
  is one fixed sub-network (the same that a tier-t phone deploys), and a
  narrower tier's sub-network lies inside a wider one's.
* **Random slicing** reuses Federated Dropout's `MaskSlicing` with the
  tier's plan: `random` draws a fresh mask per client slot and round,
  `random_per_round` one per round for every client of the tier. Masks come
  from (seed, round, key) and a layer's kept units are the k smallest of
  the same n uniforms for every k, so with `random_per_round` the round's
  masks of the tiers are nested too.
* **Deployment.** What a tier-t phone runs after training: under nested
  slicing its training slice; under random slicing no sub-network was
  trained as a unit — each round trained random ones, i.e. training
  minimized the expected loss over random k-subsets — so a phone deploys
  one fixed random k-subset, the mask of round 0 (never used in training,
  rounds count from 1) with key 0, the same for every tier and therefore
  nested across tiers.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import tensorflow as tf

from tff_compress.dropout import slicing as dropout_slicing
from tff_compress.dropout import submodel
from tff_compress.learning import keyed
from tff_compress.tiers import settings as tier_settings


def tier_plan(model: tf.keras.Model,
              tier: tier_settings.Tier) -> submodel.SubmodelPlan:
  """The submodel plan of `tier` on the global `model` (k = ⌈p n⌉).

  Raises:
    submodel.SubmodelError: The model cannot be sliced, or `tier` overrides
      a layer that is not a hidden layer.
  """
  full = submodel.build_plan(model)
  unknown = {l for l, _ in tier.per_layer} - set(full.layers)
  if unknown:
    raise submodel.SubmodelError(
        f'tier {tier.name!r} names layers {sorted(unknown)}, which '
        f'{model.name} cannot slice; hidden layers: {", ".join(full.layers)}')
  kept = {layer: tier_settings.units_kept(tier.fraction(layer), n)
          for layer, n in zip(full.layers, full.units)}
  # build_plan keeps max(1, round(f n)) units; f = k / n gives exactly k.
  plan = submodel.build_plan(
      model, {layer: kept[layer] / n
              for layer, n in zip(full.layers, full.units)})
  if plan.widths != kept:
    raise AssertionError(f'plan widths {plan.widths} != {kept}')
  return plan


def first_units(plan: submodel.SubmodelPlan) -> dict[str, tf.Tensor]:
  """{layer: [0, 1, ..., k-1]}: the nested slice of `plan`."""
  return {layer: tf.range(k, dtype=tf.int32)
          for layer, k in zip(plan.layers, plan.kept)}


class NestedSlicing(keyed.Slicing):
  """HeteroFL's static slice: the first k units of every hidden layer.

  Every client of the tier trains the same slice in every round, so there
  is one mask key (0) and `federated_select` gathers the slice once per
  round. The broadcast codec's seed is drawn from (seed, round, tier) so
  that tiers encode with independent seeds.

  Args:
    plan: The tier's plan (`tier_plan`).
    seed: The config seed.
    tier_index: The tier's position in `tiers.mix`.
  """

  def __init__(self, plan: submodel.SubmodelPlan, seed: int,
               tier_index: int):
    self.plan = plan
    self._seed = int(seed)
    self._tier = int(tier_index)

  @property
  def max_key(self) -> int:
    return 0

  def mask_key(self, slot):
    return tf.zeros_like(tf.cast(slot, tf.int32))

  def kept(self, round_num=None, key=None) -> dict:
    """The first k units of each layer (independent of round and key)."""
    del round_num, key
    return first_units(self.plan)

  def gather(self, trainable: Sequence[tf.Tensor], round_num, key):
    return self.plan.gather(trainable, self.kept())

  def scatter(self, sliced: Sequence[tf.Tensor], round_num, key):
    return self.plan.scatter(sliced, self.kept())

  def coverage(self, round_num, key):
    return self.plan.coverage(self.kept())

  def codec_seed(self, round_num, key) -> tf.Tensor:
    del key
    s = submodel.mask_seed(self._seed, round_num, self._tier)
    return tf.random.experimental.stateless_fold_in(
        s, tf.constant(dropout_slicing.BROADCAST_DIRECTION, tf.int64))


def build_slicing(kind: str, plan: submodel.SubmodelPlan, seed: int,
                  tier_index: int, clients_per_round: int) -> keyed.Slicing:
  """The `tiers.slicing` kind of one tier.

  Args:
    kind: One of `tier_settings.SLICINGS`.
    plan: The tier's plan.
    seed: The config seed.
    tier_index: The tier's position in the mix.
    clients_per_round: K; mask keys of random slices are round slots < K.
  """
  if kind == 'nested':
    return NestedSlicing(plan, seed, tier_index)
  if kind in ('random', 'random_per_round'):
    return dropout_slicing.MaskSlicing(
        plan, seed, per_client_masks=kind == 'random',
        clients_per_round=clients_per_round)
  raise ValueError(f'tiers.slicing {kind!r}; allowed: '
                   f'{", ".join(tier_settings.SLICINGS)}')


DEPLOY_ROUND = 0  # training rounds count from 1


def deployed_units(kind: str, plan: submodel.SubmodelPlan,
                   seed: int) -> dict[str, tf.Tensor]:
  """The units a phone of this tier deploys (module docstring)."""
  if kind == 'nested':
    return first_units(plan)
  return plan.kept_indices(submodel.mask_seed(seed, DEPLOY_ROUND, 0))


def deployed_weights(plan: submodel.SubmodelPlan,
                     units: Mapping[str, tf.Tensor],
                     trainable: Sequence) -> list:
  """The tier model's trainable weights cut from the global ones."""
  return [w.numpy() for w in plan.gather(
      [tf.convert_to_tensor(w) for w in trainable], units)]
