"""The `personalization.*` and `fedper.*` config sections (README
"Personalization")."""

from __future__ import annotations

import dataclasses

from tff_compress import settings_lib as s

# Algorithms whose runs can evaluate fine-tuning (TFF learning processes).
FINETUNE_ALGORITHMS = ('fedavg', 'fedper')
FINETUNE_OPTIMIZERS = ('sgd', 'adam')


@dataclasses.dataclass(frozen=True)
class PersonalizationSettings(s.Section):
  """Fine-tuning evaluation: each evaluation client fine-tunes the model it
  received on its own train part and is scored on its own held-out part.

  With `evaluate` on (and always with `algorithm=fedper`) every client's
  examples are split once, stratified by label and seeded by (seed,
  client): a held-out part of `test_fraction` that no training round ever
  uses, and a train part that federated training and fine-tuning use.
  Evaluation runs after the last round and every `every` rounds.
  """

  SECTION = 'personalization'

  evaluate: bool = s.field(
      False, s.boolean,
      'fine-tuning evaluation after the last round (and every '
      'personalization.every rounds): per-client accuracy of the received '
      'model vs after local fine-tuning')
  every: int = s.field(
      0, s.int_range(0), 'also evaluate every K rounds (0: after the last '
      'round only)')
  eval_clients: int = s.field(
      0, s.int_range(0), 'evaluation clients: a seeded sample of the '
      'training clients, the same every time (0 = all)')
  test_fraction: float = s.field(
      0.25, s.float_range(0.0, 1.0, lo_open=True, hi_open=True),
      "each client's held-out share of its examples (stratified by label); "
      'never trained on, used only by that client to score')
  epochs: int = s.field(2, s.int_range(1),
                        'fine-tuning epochs over the train part')
  batch_size: int = s.field(20, s.int_range(1), 'fine-tuning batch size')
  optimizer: str = s.field('sgd', s.choice(FINETUNE_OPTIMIZERS),
                           'fine-tuning optimizer: sgd (with momentum) or '
                           'adam')
  learning_rate: float = s.field(0.02, s.float_range(0.0, lo_open=True),
                                 'fine-tuning step size')
  momentum: float = s.field(0.0, s.float_range(0.0, 1.0, hi_open=True),
                            'fine-tuning momentum (sgd)')
  layers: str = s.field(
      '', s.string, "layers fine-tuning updates: '' = every trainable "
      "layer, 'head' = the output layer, or comma-separated layer names")

  def holds_out(self, algorithm: str) -> bool:
    """True if clients hold out a test part (evaluation or FedPer)."""
    return self.evaluate or algorithm == 'fedper'

  @classmethod
  def check(cls, config) -> None:
    p = config.personalization
    if p.evaluate and config.algorithm not in FINETUNE_ALGORITHMS:
      raise s.problem('personalization.evaluate', (
          f"is true with algorithm={config.algorithm!r}; allowed with "
          f'{", ".join(FINETUNE_ALGORITHMS)}'))
    if not cls.from_config(p).holds_out(config.algorithm):
      return
    if config.runtime.workers:
      raise s.problem('personalization.evaluate', (
          'needs local execution (runtime.workers empty): evaluation clients '
          "are fed from the driver's held-out data"))
    if config.data.name != 'emnist' and p.eval_clients > config.data.num_clients:
      raise s.problem('personalization.eval_clients', (
          f'is {p.eval_clients}; allowed: 0..data.num_clients '
          f'({config.data.num_clients})'))
    if p.layers:
      _check_layers('personalization.layers', p.layers, config.model.name)


@dataclasses.dataclass(frozen=True)
class FedPerSettings(s.Section):
  """FedPer (Arivazhagan et al. 2019) with `algorithm=fedper`: the named
  layers stay on each client — never broadcast, never uploaded, never
  aggregated — and each client keeps its own copy between its rounds."""

  SECTION = 'fedper'

  layers: str = s.field(
      'head', s.string, "algorithm=fedper: the layers each client keeps "
      "local: 'head' (the output layer) or comma-separated layer names")

  @classmethod
  def check(cls, config) -> None:
    if config.algorithm != 'fedper':
      return
    key = 'fedper.layers'
    shared = _check_layers(key, config.fedper.layers, config.model.name)
    if not shared:
      raise s.problem(key, (
          f'is {config.fedper.layers!r}, every layer with weights: nothing '
          'would be federated'))
    d = config.dropout
    if d.keep != 1.0 or d.per_layer.strip():
      raise s.problem('algorithm', (
          "is 'fedper'; Federated Dropout (dropout.*) is not supported with "
          'it'))
    f = config.faults
    if (f.drop_prob or f.nan_prob or f.huge_prob or f.over_select or
        f.deadline):
      raise s.problem('algorithm', (
          "is 'fedper'; client faults (faults.*) are not supported with it"))


def _check_layers(key: str, spec: str, model_name: str) -> list[str]:
  """Raises ConfigError unless `spec` names layers of `model_name`.

  Returns:
    The model's other layers with weights (those not named).
  """
  # pylint: disable=g-import-not-at-top  (TensorFlow only when needed)
  from tff_compress.models import registry as model_registry
  from tff_compress.personalization import layers as layers_lib
  # pylint: enable=g-import-not-at-top
  # Layer names depend on neither the input shape nor the classes.
  model = model_registry.build_model(model_name, (28, 28, 1), 10)
  try:
    named = layers_lib.parse(spec, model)
  except layers_lib.LayerSpecError as e:
    raise s.problem(key, f'is {spec!r}: {e}') from e
  return [n for n in layers_lib.trainable_layer_names(model)
          if n not in named]
