"""The `gkt.*` config section, and what FedGKT / FedAvg-BN do not support."""

from __future__ import annotations

import dataclasses

from tff_compress import settings_lib as s
from tff_compress.dropout import settings as dropout_settings
from tff_compress.encoders import settings as codec_settings
from tff_compress.faults import settings as fault_settings
from tff_compress.fedavg import settings as fedavg_settings
from tff_compress.privacy import settings as privacy_settings
from tff_compress.runtime import settings as runtime_settings

# Config `model.name` of the large network FedGKT trains -> its depth.
SERVER_DEPTHS = {'resnet20': 20, 'resnet56': 56, 'resnet110': 110}

# Keys only algorithm=fedavg implements: (section class, key).
_FEDAVG_ONLY = (
    (fedavg_settings.ClientSettings, 'work'),
    (dropout_settings.DropoutSettings, 'keep'),
    (dropout_settings.DropoutSettings, 'per_layer'),
    (privacy_settings.DpSettings, 'mode'),
    (privacy_settings.SecAggSettings, 'enabled'),
    (fault_settings.FaultSettings, 'drop_prob'),
    (fault_settings.FaultSettings, 'nan_prob'),
    (fault_settings.FaultSettings, 'huge_prob'),
    (fault_settings.FaultSettings, 'over_select'),
    (fault_settings.FaultSettings, 'deadline'),
    (runtime_settings.RuntimeSettings, 'workers'),
    (codec_settings.BroadcastCodec, 'transform'),
    (codec_settings.BroadcastCodec, 'bits'),
    (codec_settings.BroadcastCodec, 'subsample'),
    (codec_settings.BroadcastCodec, 'quantizer'),
    (codec_settings.BroadcastCodec, 'scale'),
    (codec_settings.UplinkCodec, 'transform'),
    (codec_settings.UplinkCodec, 'bits'),
    (codec_settings.UplinkCodec, 'subsample'),
    (codec_settings.UplinkCodec, 'quantizer'),
    (codec_settings.UplinkCodec, 'scale'),
)


@dataclasses.dataclass(frozen=True)
class GktSettings(s.Section):
  """FedGKT (He et al. 2020; algorithm='fedgkt'), FedML's released recipe.

  Clients train the edge model `edge_model` for client.epochs epochs (batch
  client.batch_size) on CE + alpha * KD_T against the server's logits; the
  server trains for `server_epochs` (batch `server_batch_size`) on the
  uploaded feature maps with CE + beta * KD_T against the clients' logits
  (beta = 0: FedML's script trains the server on CE only). Optimizers:
  adam | sgdm (momentum 0.9) | sgd, with L2 `weight_decay`. Feature maps are
  sent as float32 (bits=32) or quantized to `bits` bits per sample:
  stochastic uniform quantization (1..8, 16) or, with quantizer='eden', a
  whole-sample rotation and EDEN's Lloyd-Max levels (1..8).
  """

  SECTION = 'gkt'

  edge_model: str = s.field(
      'resnet8', s.registry_choice('tff_compress.gkt.process', 'EDGE_MODELS'),
      'the edge model clients train')
  temperature: float = s.field(3.0, s.float_range(0.0, lo_open=True),
                               'KD temperature T')
  alpha: float = s.field(1.0, s.float_range(0.0), 'client KD weight')
  beta: float = s.field(0.0, s.float_range(0.0), 'server KD weight')
  client_optimizer: str = s.field(
      'adam', s.registry_choice('tff_compress.gkt.training', 'OPTIMIZERS'),
      'edge optimizer')
  client_learning_rate: float = s.field(
      0.001, s.float_range(0.0, lo_open=True), 'edge learning rate')
  server_optimizer: str = s.field(
      'adam', s.registry_choice('tff_compress.gkt.training', 'OPTIMIZERS'),
      'server optimizer')
  server_learning_rate: float = s.field(
      0.001, s.float_range(0.0, lo_open=True), 'server learning rate')
  server_epochs: int = s.field(20, s.int_range(1),
                               'server epochs per round')
  server_batch_size: int = s.field(256, s.int_range(1), 'server batch')
  weight_decay: float = s.field(1e-4, s.float_range(0.0),
                                'L2 weight decay of both sides')
  bits: int = s.field(32, s.choice(codec_settings.BITS, ' (32 = float32)'),
                      'feature map bits (32 = float32)')
  quantizer: str = s.field(
      'uniform', s.choice(codec_settings.QUANTIZERS),
      "feature quantizer: uniform (stochastic rounding between each "
      "sample's min and max) or eden (whole-sample rotation + Lloyd-Max "
      'levels, unbiased scale; bits 1..8)', added=True)

  @classmethod
  def check(cls, config) -> None:
    """Keys only the TFF learning processes (`algorithm=fedavg`, `fedper`)
    implement; fedgkt's large model."""
    if config.algorithm not in ('fedgkt', 'fedavg_bn'):
      return
    for section_cls, key in _FEDAVG_ONLY:
      name = f'{section_cls.SECTION}.{key}'
      value = config[section_cls.SECTION][key]
      default = {f.name: f.default
                 for f in dataclasses.fields(section_cls)}[key]
      if value != default:
        hint = ('; FedGKT compresses its uploads with gkt.bits'
                if section_cls.SECTION in ('broadcast', 'uplink') else '')
        raise s.problem(name, (
            f'is {value!r}; it applies to algorithm=fedavg only (algorithm '
            f'is {config.algorithm!r}: leave it at {default!r}{hint})'))
    g = config.gkt
    if g.get('quantizer') == 'eden' and g.bits == 16:
      raise s.problem('gkt.bits', "is 16; with gkt.quantizer='eden' use "
                      '1..8 or 32 (float32)')
    if (config.algorithm == 'fedgkt' and
        config.model.name not in SERVER_DEPTHS):
      raise s.problem('model.name', (
          f'is {config.model.name!r}; algorithm=fedgkt splits one of: '
          f'{", ".join(sorted(SERVER_DEPTHS))}'))
