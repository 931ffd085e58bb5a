"""The `tiers.*` config section: device tiers, each training its own width.

A tier is a class of phones (memory, compute) that trains and deploys a
sub-network of the global model: a fraction p of every hidden layer's
units/filters (HeteroFL, Diao et al. 2021; FjORD, Horvath et al. 2021),
optionally with per-layer fractions. `tiers.mix` lists the tiers:

  'NAME:SHARE:WIDTH[:LAYER=P;LAYER=P...]' items separated by commas

e.g. ``'high:1:1.0, mid:1:0.5, low:1:0.25'`` (three equal shares of the
clients at widths 1, 1/2, 1/4) or ``'big:2:1.0, small:1:0.5:dense1=0.25;conv2=0.75'``.
SHARE is a positive number or fraction ('1/3'), normalized over the tiers;
WIDTH is p in (0, 1]; LAYER=P overrides p for one hidden layer. A layer of n
units keeps k = ⌈p n⌉ of them (HeteroFL's rounding).

This module only parses and validates; `tiers/assignment.py` gives each
client its tier and `fedavg/process.py` builds the tiered learning process.
"""

from __future__ import annotations

import dataclasses
import fractions
import math
import re

from tff_compress import settings_lib as s

SLICINGS = ('nested', 'random', 'random_per_round')
_NAME = re.compile(r'^[a-z][a-z0-9_]*$')


class TierSpecError(ValueError):
  """`tiers.mix` is malformed (the message names the item)."""


@dataclasses.dataclass(frozen=True)
class Tier:
  """One tier of `tiers.mix`.

  Attributes:
    name: Lower-case identifier (metrics columns are `tier_<name>_...`).
    share: Fraction of the clients in this tier (the shares sum to 1).
    width: Fraction p of every hidden layer's units the tier trains.
    per_layer: Hidden layer name -> its own fraction (overrides `width`).
  """

  name: str
  share: float
  width: float
  per_layer: tuple[tuple[str, float], ...] = ()

  def fraction(self, layer: str) -> float:
    """p of `layer`: its override, else `width`."""
    return dict(self.per_layer).get(layer, self.width)

  def describe(self) -> str:
    text = f'{self.name} ({self.share:.0%} of clients, p={self.width:g}'
    if self.per_layer:
      text += ', ' + ', '.join(f'{l}={p:g}' for l, p in self.per_layer)
    return text + ')'


def _fraction(text: str, item: str, what: str) -> float:
  try:
    value = float(fractions.Fraction(text.strip()))
  except (ValueError, ZeroDivisionError):
    raise TierSpecError(f'tier {item!r} has {what} {text.strip()!r}; '
                        'expected a number such as 0.5 or 1/3') from None
  return value


def parse_mix(text: str) -> tuple[Tier, ...]:
  """`tiers.mix` -> its tiers, in order, shares normalized to sum to 1.

  Raises:
    TierSpecError: A malformed item, a repeated or invalid name, a share
      <= 0, a width outside (0, 1].
  """
  raw = []
  for item in filter(None, (t.strip() for t in text.split(','))):
    parts = [p.strip() for p in item.split(':')]
    if len(parts) not in (3, 4) or not all(parts[:3]):
      raise TierSpecError(
          f'tier {item!r} is not NAME:SHARE:WIDTH[:LAYER=P;LAYER=P], e.g. '
          "'low:1:0.25' or 'low:1:0.5:dense1=0.25'")
    name = parts[0]
    if not _NAME.match(name):
      raise TierSpecError(f'tier name {name!r} must be lower-case letters, '
                          'digits and _ (it names metrics columns)')
    share = _fraction(parts[1], item, 'share')
    if not share > 0 or math.isinf(share):
      raise TierSpecError(f'tier {item!r} has share {parts[1]!r}; it must be '
                          '> 0')
    width = _fraction(parts[2], item, 'width')
    if not 0 < width <= 1:
      raise TierSpecError(f'tier {item!r} has width {parts[2]!r}; allowed: '
                          '(0, 1]')
    per_layer = []
    if len(parts) == 4:
      for override in filter(None, (o.strip() for o in parts[3].split(';'))):
        layer, sep, value = override.partition('=')
        if not sep or not layer.strip():
          raise TierSpecError(f'tier {item!r} has {override!r}; expected '
                              'LAYER=P items separated by ;')
        p = _fraction(value, item, f'{layer.strip()} width')
        if not 0 < p <= 1:
          raise TierSpecError(f'tier {item!r} gives {override!r}; allowed: '
                              '(0, 1]')
        per_layer.append((layer.strip(), p))
    raw.append((name, share, width, tuple(per_layer)))
  names = [r[0] for r in raw]
  repeated = sorted({n for n in names if names.count(n) > 1})
  if repeated:
    raise TierSpecError(f'tier names repeat: {", ".join(repeated)}')
  total = sum(r[1] for r in raw)
  return tuple(Tier(n, sh / total, w, pl) for n, sh, w, pl in raw)


def units_kept(p: float, n: int) -> int:
  """k = ⌈p n⌉ (at least 1): HeteroFL's width of a layer of n units.

  The product is rounded to 9 digits first so that float noise (0.1 * 30 =
  3.0000000000000004) does not add a unit.
  """
  return max(1, int(math.ceil(round(p * n, 9))))


@dataclasses.dataclass(frozen=True)
class TierSettings(s.Section):
  """Device tiers: each client trains the sub-network its tier affords.

  Every client belongs to one tier for the whole run (`tiers/assignment.py`:
  a seeded permutation of the client indices cut by the shares). Each round,
  each tier's sampled clients receive and train their tier's slice of the
  global model; the server averages every coordinate over the clients that
  trained it (as Federated Dropout does) and each tier's slice is evaluated
  on the test split at every evaluation.
  """

  SECTION = 'tiers'

  mix: str = s.field(
      '', s.string,
      "device tiers 'NAME:SHARE:WIDTH[:LAYER=P;...]' separated by commas, "
      "e.g. 'high:1:1.0,mid:1:0.5,low:1:0.25' ('' = no tiers)")
  slicing: str = s.field(
      'nested', s.choice(SLICINGS),
      'nested (HeteroFL: the first ceil(p n) units, a fixed sub-network), '
      'random (a fresh random slice per client and round, Federated '
      'Dropout) or random_per_round (one random slice per tier and round)')
  rescale: bool = s.field(
      True, s.boolean,
      "multiply a sliced layer's activations by n/k in a tier's model "
      "(HeteroFL's scaler), in training and in the tier's deployed model")
  train_only: str = s.field(
      '', s.string,
      "baseline: only this tier's sampled clients train, the others sit "
      "the rounds out ('' = every tier trains)")

  @property
  def active(self) -> bool:
    return bool(self.mix.strip())

  @property
  def tiers(self) -> tuple[Tier, ...]:
    """The parsed `mix` (empty when inactive)."""
    return parse_mix(self.mix) if self.active else ()

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(t.name for t in self.tiers)

  @classmethod
  def check(cls, config) -> None:
    """The mix parses and fits the model and the clients; what tiers do not
    compose with is refused here."""
    t = config.tiers
    settings = cls.from_config(t)
    if not settings.active:
      if t.train_only:
        raise s.problem('tiers.train_only', (
            f"is {t.train_only!r}; it needs tiers.mix (no tiers are set)"))
      return
    try:
      tiers = parse_mix(t.mix)
    except TierSpecError as e:
      raise s.problem('tiers.mix', str(e)) from None
    if config.algorithm != 'fedavg':
      raise s.problem('tiers.mix', (
          f'applies to algorithm=fedavg only (algorithm is '
          f'{config.algorithm!r})'))
    if config.dropout.keep != 1.0 or config.dropout.per_layer.strip():
      raise s.problem('tiers.mix', (
          'and dropout.keep/dropout.per_layer are both set; a tier\'s width '
          'replaces dropout.keep (tiers.slicing=random gives each tier '
          'Federated Dropout masks)'))
    if config.dp.mode == 'user' and config.dp.adaptive:
      raise s.problem('dp.adaptive', (
          'is True; allowed: False with tiers.mix (each tier aggregates in '
          'its own pass, the adaptive clip needs one quantile over all '
          'clients of a round)'))
    names = [tier.name for tier in tiers]
    if t.train_only and t.train_only not in names:
      raise s.problem('tiers.train_only', (
          f'is {t.train_only!r}; allowed: one of {", ".join(names)}'))
    faults = config.faults
    if t.train_only and (faults.drop_prob or faults.over_select or
                         faults.deadline):
      raise s.problem('tiers.train_only', (
          f'is {t.train_only!r}; allowed: \'\' with faults.drop_prob, '
          'faults.over_select or faults.deadline (who reports would depend '
          'on the clients left out)'))
    # pylint: disable=g-import-not-at-top  (TensorFlow only when needed)
    from tff_compress.tiers import assignment
    # pylint: enable=g-import-not-at-top
    counts = assignment.tier_counts(config.data.num_clients,
                                    [tier.share for tier in tiers])
    empty = [n for n, c in zip(names, counts) if c == 0]
    if empty:
      raise s.problem('tiers.mix', (
          f'leaves tier{"s" if len(empty) > 1 else ""} {", ".join(empty)} '
          f'without clients (data.num_clients is {config.data.num_clients})'))
    _check_layers(config, tiers)


def _check_layers(config, tiers) -> None:
  """Per-layer overrides name hidden layers; the model can be sliced."""
  # pylint: disable=g-import-not-at-top  (TensorFlow only when needed)
  from tff_compress.dropout import submodel
  from tff_compress.models import registry as model_registry
  # pylint: enable=g-import-not-at-top
  # Layer names do not depend on the input shape or the number of classes.
  model = model_registry.build_model(config.model.name, (28, 28, 1), 10)
  layers = submodel.droppable_layers(model)
  for tier in tiers:
    for layer, _ in tier.per_layer:
      if layer not in layers:
        raise s.problem('tiers.mix', (
            f'tier {tier.name!r} names layer {layer!r}, which '
            f'{config.model.name} cannot slice; hidden layers: '
            f'{", ".join(layers)}'))
  try:
    submodel.build_plan(model)
  except submodel.SubmodelError as e:
    raise s.problem('tiers.mix', f'cannot apply: {e}') from None
