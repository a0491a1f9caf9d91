"""Which Darknet's numbers a network computes: pjreddie's (the original) or AlexeyAB's.

Every difference between the two forks that changes a number lives in the `Fork` table below,
one field per difference, so that a reader sees them all together; layers consult
`net.fork` (copied onto each layer as `layer.fork`) instead of testing a fork name.

    PJREDDIE.bn_rolling_momentum    # .99
    ALEXEYAB.bn_rolling_momentum    # .9

`resolve_fork("alexeyab")` turns a user's choice into one of the two objects.
"""
from dataclasses import dataclass

import numpy as np

F32 = np.float32


@dataclass(frozen=True)
class Fork:
    name: str
    # Batch norm: x_hat = (x - mean) / (sqrt(var + eps_in) + eps_out)
    bn_eps_inside_sqrt: float
    bn_eps_outside_sqrt: float
    # rolling = momentum * rolling + (1 - momentum) * batch statistic, inside forward
    bn_rolling_momentum: float
    # Backward: normalize_delta's own term divides the delta by sqrt(var + in) + out; the mean
    # and variance deltas use sqrt(var + 1e-5) in both forks
    bn_backward_eps_inside_sqrt: float
    bn_backward_eps_outside_sqrt: float
    # AlexeyAB's CPU backward_batchnorm_layer never calls backward_bias: BN biases do not train
    bn_biases_train: bool
    # pjreddie's 1x1 convolution backward writes (not adds) into the previous delta
    conv1x1_backward_overwrites: bool
    # [yolo] truth per box and default number of boxes (AlexeyAB: x y w h class track_id, max=)
    yolo_truth_floats: int
    yolo_max_boxes: int
    # weights header revision written by save_weights
    weights_revision: int

    def __str__(self):
        return self.name


PJREDDIE = Fork(
    name="pjreddie",
    bn_eps_inside_sqrt=0.0, bn_eps_outside_sqrt=1e-6, bn_rolling_momentum=.99,
    bn_backward_eps_inside_sqrt=1e-5, bn_backward_eps_outside_sqrt=0.0,
    bn_biases_train=True,
    conv1x1_backward_overwrites=True,
    yolo_truth_floats=5, yolo_max_boxes=90,
    weights_revision=0,
)

ALEXEYAB = Fork(
    name="alexeyab",
    bn_eps_inside_sqrt=1e-5, bn_eps_outside_sqrt=0.0, bn_rolling_momentum=.9,
    bn_backward_eps_inside_sqrt=0.0, bn_backward_eps_outside_sqrt=1e-5,
    bn_biases_train=False,
    conv1x1_backward_overwrites=False,
    yolo_truth_floats=6, yolo_max_boxes=200,
    weights_revision=5,
)

FORKS = {f.name: f for f in (PJREDDIE, ALEXEYAB)}


def resolve_fork(fork):
    """A Fork from a name ("pjreddie", "alexeyab"), a Fork, or None (pjreddie)."""
    if fork is None:
        return PJREDDIE
    if isinstance(fork, Fork):
        return fork
    try:
        return FORKS[str(fork).lower()]
    except KeyError:
        raise ValueError(f"fork must be one of {sorted(FORKS)}, not {fork!r}") from None
