"""torch backend: send Keras's fused optimizers through the per-variable path.

On torch, Keras swaps stock `Adam`, `AdamW`, `SGD`, `Lion`, ... instances for
`TorchParallelOptimizer` subclasses whose `_backend_update_step` runs
`_foreach` kernels and never calls `update_step`, where SING does its work.
`generic_backend_update_step` gives back the host's own non-fused
`_backend_update_step` (the next one in the class hierarchy), which keeps any
per-step bookkeeping of the host (e.g. Nadam's momentum-schedule product) and
calls `update_step` for each variable, under `torch.no_grad()` as the fused
path does.
"""

import functools

import torch
from keras.src.backend.torch.optimizers.torch_parallel_optimizer import (
    TorchParallelOptimizer,
)


def generic_backend_update_step(host):
    """The host's `_backend_update_step` without the fused torch path."""
    if isinstance(host, TorchParallelOptimizer):
        update = super(TorchParallelOptimizer, host)._backend_update_step
    else:
        update = host._backend_update_step

    @functools.wraps(update)
    def backend_update_step(grads, trainable_variables, learning_rate):
        with torch.no_grad():
            update(grads, trainable_variables, learning_rate)

    return backend_update_step
