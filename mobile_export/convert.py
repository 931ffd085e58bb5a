"""TFLite conversion of the trainer and the op inventory of a .tflite file."""

from __future__ import annotations

import os
import tempfile

import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema_fb

from mobile_export import trainer as trainer_lib

_BUILTIN_NAMES = {v: k for k, v in vars(schema_fb.BuiltinOperator).items()
                  if not k.startswith('_')}


def ops_used(model: bytes) -> list[str]:
  """Sorted op names of every subgraph (custom/Flex ops by their name)."""
  m = schema_fb.Model.GetRootAsModel(model, 0)
  names = set()
  for i in range(m.OperatorCodesLength()):
    code = m.OperatorCodes(i)
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    if builtin == schema_fb.BuiltinOperator.CUSTOM:
      names.add(code.CustomCode().decode())
    else:
      names.add(_BUILTIN_NAMES.get(builtin, f'BUILTIN_{builtin}'))
  return sorted(names)


def flex_ops(ops: list[str]) -> list[str]:
  return [o for o in ops if o.startswith('Flex')]


def convert_trainer(trainer: trainer_lib.Trainer) -> bytes:
  """trainer.tflite bytes: builtin ops only unless `trainer.uses_flex`."""
  signatures = trainer.signatures()
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, 'saved_model')
    tf.saved_model.save(trainer, path, signatures=signatures)
    converter = tf.lite.TFLiteConverter.from_saved_model(
        path, signature_keys=list(signatures))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if trainer.uses_flex:
      converter.target_spec.supported_ops.append(
          tf.lite.OpsSet.SELECT_TF_OPS)
    converter.experimental_enable_resource_variables = True
    return converter.convert()
