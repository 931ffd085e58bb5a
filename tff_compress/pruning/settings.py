"""The `pruning.*` config section: federated magnitude pruning to a target.

The server keeps one global mask per pruned layer and recomputes it from
the magnitudes of the aggregated model at the steps of tfmot's
`PolynomialDecay` schedule over rounds; clients train under it and both
directions send only the unmasked coordinates (`pruning/masks.py`,
`pruning/process.py`).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional

from tff_compress import settings_lib as s

STRUCTURES = ('unstructured', 'units', 'm_by_n', 'block')


def parse_m_by_n(text: str) -> tuple[int, int]:
  """'2:4' -> (2, 4): M zeros in every N consecutive weights (tfmot's
  `sparsity_m_by_n` convention)."""
  m = re.fullmatch(r'\s*(\d+)\s*:\s*(\d+)\s*', text)
  if not m or not 0 < int(m.group(1)) < int(m.group(2)):
    raise ValueError(f'{text!r} is not M:N with 0 < M < N, e.g. 2:4')
  return int(m.group(1)), int(m.group(2))


def parse_block(text: str) -> tuple[int, int]:
  """'16x1' -> (16, 1): rows x columns of a Dense kernel [in, out]."""
  m = re.fullmatch(r'\s*(\d+)\s*x\s*(\d+)\s*', text)
  if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
    raise ValueError(f'{text!r} is not RxC with R, C >= 1, e.g. 16x1')
  return int(m.group(1)), int(m.group(2))


def _parses(parse, example: str) -> s.Rule:
  def check(v, _):
    if not isinstance(v, str):
      return f'must be a string like {example!r}, got {v!r}'
    try:
      parse(v)
    except ValueError as e:
      return f'is {e}'
    return None
  return check


def _data_shapes(data) -> tuple[tuple[int, ...], int]:
  """(input shape, classes) of `data.*` without loading it: what the
  pruned layers' kernel shapes (block and M:N divisibility) depend on."""
  if data.name.startswith('cifar'):
    return (32, 32, 3), 100 if data.name == 'cifar100' else 10
  if data.name == 'emnist' and not data.only_digits:
    return (28, 28, 1), 62
  return (28, 28, 1), 10


@dataclasses.dataclass(frozen=True)
class PruningSettings(s.Section):
  """Federated pruning (Zhu & Gupta 2017's gradual schedule, tfmot's rules).

  The sparsity of round t follows tfmot's `PolynomialDecay` with step = t:
  ``s_t = target · (1 − (1 − (t − begin)/(end − begin))^power)`` at the
  mask updates t = begin, begin + frequency, ..., end (0 at `begin`,
  `target` at `end`); with ``begin_round == end_round`` the target is set
  in one step (tfmot's `ConstantSparsity`). `target` = 0 is no pruning
  (`active` is False).
  """

  SECTION = 'pruning'

  target: float = s.field(
      0.0, s.float_range(0.0, 1.0, hi_open=True),
      'target sparsity s_f of every pruned layer at pruning.end_round: the '
      'fraction of its kernel weights (structure=units: of its units) that '
      'are zero; 0 = no pruning')
  structure: str = s.field(
      'unstructured', s.choice(STRUCTURES),
      'unstructured (any weights), units (whole conv filters / dense units: '
      'clients train a smaller model), m_by_n (tfmot: M zeros in every N '
      'consecutive input weights), block (Dense kernels in blocks)')
  layers: str = s.field(
      '', s.string,
      "layers to prune, e.g. 'conv2,dense1'; '' = every layer the structure "
      'can prune')
  begin_round: int = s.field(
      1, s.int_range(1),
      'first step of the schedule (its sparsity is 0 unless begin_round = '
      'end_round)')
  end_round: int = s.field(
      10, s.int_range(1), 'the step that reaches target; masks stay fixed '
      'afterwards')
  frequency: int = s.field(
      3, s.int_range(1), 'rounds between mask updates (end_round - '
      'begin_round must be a multiple)')
  power: float = s.field(
      3.0, s.float_range(0.0, lo_open=True),
      "exponent of tfmot's PolynomialDecay (3: prune fast early)")
  m_by_n: str = s.field(
      '2:4', _parses(parse_m_by_n, '2:4'),
      'structure=m_by_n: M zeros in every N consecutive input weights of an '
      'output (TFLite layout); target must be M/N')
  block: str = s.field(
      '16x1', _parses(parse_block, '16x1'),
      'structure=block: R input rows x C output columns of a Dense kernel '
      "pruned together (16x1 = TFLite's 1x16 sparse FULLY_CONNECTED block)")

  @property
  def active(self) -> bool:
    return self.target > 0.0

  @property
  def layer_names(self) -> Optional[tuple[str, ...]]:
    """The named layers, or None for the structure's default."""
    names = tuple(n.strip() for n in self.layers.split(',') if n.strip())
    return names or None

  @property
  def m_by_n_pair(self) -> tuple[int, int]:
    return parse_m_by_n(self.m_by_n)

  @property
  def block_shape(self) -> tuple[int, int]:
    return parse_block(self.block)

  @classmethod
  def check(cls, config) -> None:
    """Schedule consistency, supported combinations, prunable layers."""
    p = cls.from_config(config.pruning)
    if not p.active:
      return
    if config.algorithm != 'fedavg':
      raise s.problem('pruning.target', (
          f'is {p.target}; pruning applies to algorithm=fedavg only '
          f'(algorithm is {config.algorithm!r})'))
    if config.dropout.keep != 1.0 or config.dropout.per_layer.strip():
      raise s.problem('pruning.target', (
          f'is {p.target}; pruning with Federated Dropout is not supported '
          '(both cut the model a client trains): set dropout.keep=1 and '
          "dropout.per_layer=''"))
    if config.tiers.mix.strip():
      raise s.problem('pruning.target', (
          f'is {p.target}; pruning with device tiers (tiers.mix) is not '
          'supported (both cut the model a client trains): set '
          "tiers.mix=''"))
    if config.dp.mode == 'sample':
      raise s.problem('pruning.target', (
          f"is {p.target}; pruning with dp.mode='sample' is not supported: "
          "DP-SGD's client work does not load the mask the server sends "
          "(use dp.mode='user', which clips the pruned update)"))
    if config.runtime.workers.strip():
      raise s.problem('pruning.target', (
          f'is {p.target}; pruned runs switch learning processes at mask '
          'updates, which remote workers do not run yet: unset '
          'runtime.workers (--workers)'))
    if p.end_round < p.begin_round:
      raise s.problem('pruning.end_round', (
          f'is {p.end_round}; allowed: >= pruning.begin_round '
          f'({p.begin_round})'))
    if p.end_round > config.rounds:
      raise s.problem('pruning.end_round', (
          f'is {p.end_round}; allowed: <= rounds ({config.rounds}), or the '
          'target is never reached'))
    if (p.end_round - p.begin_round) % p.frequency:
      raise s.problem('pruning.frequency', (
          f'is {p.frequency}; end_round - begin_round '
          f'({p.end_round - p.begin_round}) must be a multiple of it, or '
          'the last mask update misses the target'))
    if p.structure == 'm_by_n':
      m, n = p.m_by_n_pair
      if abs(p.target - m / n) > 1e-9:
        raise s.problem('pruning.target', (
            f'is {p.target}; structure=m_by_n with pruning.m_by_n='
            f'{p.m_by_n!r} has sparsity {m}/{n} = {m / n:g}: set it'))
      if p.end_round != p.begin_round:
        raise s.problem('pruning.end_round', (
            f'is {p.end_round}; structure=m_by_n prunes in one step: set it '
            f'to pruning.begin_round ({p.begin_round})'))
    # pylint: disable=g-import-not-at-top  (TensorFlow only when needed)
    from tff_compress.models import registry as model_registry
    from tff_compress.pruning import masks
    # pylint: enable=g-import-not-at-top
    model = model_registry.build_model(config.model.name,
                                       *_data_shapes(config.data))
    try:
      masks.resolve_layers(model, p)
    except masks.PruningError as e:
      raise s.ConfigError(str(e)) from e
