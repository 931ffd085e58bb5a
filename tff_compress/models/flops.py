"""Parameter and FLOP counts computed from a Keras model's layer shapes.

A FLOP is one multiply or one add, so a multiply-accumulate is 2 FLOPs.

* Dense (n_in -> n_out): forward 2*n_in*n_out (+ n_out bias adds).
* Conv2D (k_h x k_w x c_in -> c_out, output H x W):
  forward 2*k_h*k_w*c_in*c_out*H*W (+ c_out*H*W bias adds).
* Training one example = forward + backward. The backward pass of a
  dense/conv layer computes the gradient w.r.t. its input and w.r.t. its
  weights, each as costly as the forward product, so training costs
  3x the forward FLOPs of these layers. The first layer needs no input
  gradient, so its backward costs only 1x (we count that saving).
* BatchNormalization over n output elements (the ResNets; ~5 % of their
  conv FLOPs): forward 4n (subtract the mean, scale by 1/sigma, then
  gamma * x + beta), weight gradient 3n (d_gamma += dy * x_hat, d_beta +=
  dy), input gradient 6n (dx = gamma / sigma * (dy - mean(dy) - x_hat *
  mean(dy * x_hat)) with its two reductions).
* Add (residual sum of k tensors of n elements): forward (k - 1) n; its
  gradient is the incoming gradient, no arithmetic.
Pooling, activations and the loss are O(activations) and are ignored (< 1 % of
the total for the models here); this matches how Caldas et al. count.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class LayerFlops:
  name: str
  forward: int
  weight_grad: int
  input_grad: int


def layer_flops(model: tf.keras.Model) -> list[LayerFlops]:
  """Per-layer forward / weight-gradient / input-gradient FLOPs per example."""
  out = []
  first = True
  for layer in model.layers:
    if isinstance(layer, tf.keras.layers.Dense):
      n_in = int(layer.kernel.shape[0])
      n_out = int(layer.kernel.shape[1])
      fwd = 2 * n_in * n_out + (n_out if layer.use_bias else 0)
      wgrad = 2 * n_in * n_out + (n_out if layer.use_bias else 0)
      igrad = 0 if first else 2 * n_in * n_out
    elif isinstance(layer, tf.keras.layers.Conv2D):
      kh, kw, c_in, c_out = (int(d) for d in layer.kernel.shape)
      _, h, w, _ = layer.output.shape
      positions = int(h) * int(w)
      macs = kh * kw * c_in * c_out * positions
      bias = c_out * positions if layer.use_bias else 0
      fwd = 2 * macs + bias
      wgrad = 2 * macs + bias
      igrad = 0 if first else 2 * macs
    elif isinstance(layer, tf.keras.layers.BatchNormalization):
      n = int(np.prod(layer.output.shape[1:]))
      out.append(LayerFlops(layer.name, 4 * n, 3 * n, 0 if first else 6 * n))
      continue
    elif isinstance(layer, tf.keras.layers.Add):
      n = int(np.prod(layer.output.shape[1:]))
      out.append(LayerFlops(layer.name, (len(layer.input) - 1) * n, 0, 0))
      continue
    else:
      continue
    first = False
    out.append(LayerFlops(layer.name, fwd, wgrad, igrad))
  return out


def forward_flops_per_example(model: tf.keras.Model) -> int:
  return sum(l.forward for l in layer_flops(model))


def training_flops_per_example(model: tf.keras.Model) -> int:
  """Forward + backward FLOPs of one training example."""
  return sum(l.forward + l.weight_grad + l.input_grad
             for l in layer_flops(model))


def count_params(model: tf.keras.Model) -> int:
  return int(sum(np.prod(w.shape) for w in model.trainable_weights))
