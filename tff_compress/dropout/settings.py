"""The `dropout.*` config section (Federated Dropout, Caldas et al. 2018)."""

from __future__ import annotations

import dataclasses

from tff_compress import settings_lib as s


@dataclasses.dataclass(frozen=True)
class DropoutSettings(s.Section):
  """Each client trains a submodel keeping a fraction of every hidden layer.

  `keep` = 1 and no `per_layer` is plain FedAvg (`active` is False).
  """

  SECTION = 'dropout'

  keep: float = s.field(
      1.0, s.float_range(0.0, 1.0, lo_open=True),
      'Federated Dropout: fraction p of every hidden layer\'s units/filters a '
      'client trains, (0, 1]')
  per_layer: str = s.field(
      '', s.string,
      "per-layer overrides, e.g. 'conv2=0.5,dense1=0.75' (hidden layers only)")
  mask: str = s.field(
      'per_client', s.choice(('per_client', 'per_round')),
      'per_client (each client its own units) or per_round (one mask per '
      'round)')
  rescale: bool = s.field(
      True, s.boolean,
      "multiply a dropped layer's activations by n/k while clients train "
      '(inverted dropout); the full model is evaluated unscaled')

  @property
  def active(self) -> bool:
    return self.keep != 1.0 or bool(self.per_layer.strip())

  @property
  def per_client_masks(self) -> bool:
    return self.mask == 'per_client'

  @classmethod
  def check(cls, config) -> None:
    """`per_layer` must name droppable layers of `model.name`."""
    d = config.dropout
    if not cls.from_config(d).active:
      return
    # pylint: disable=g-import-not-at-top  (TensorFlow only when needed)
    from tff_compress.dropout import submodel
    from tff_compress.models import registry as model_registry
    # pylint: enable=g-import-not-at-top
    # Layer names do not depend on the input shape or the number of classes.
    model = model_registry.build_model(config.model.name, (28, 28, 1), 10)
    try:
      submodel.plan_for(model, cls.from_config(d))
    except submodel.SubmodelError as e:
      msg = str(e)
      if not msg.startswith('config key'):
        msg = f"config key 'dropout.keep' cannot apply: {msg}"
      raise s.ConfigError(msg) from e
