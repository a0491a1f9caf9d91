"""Training at changing input sizes (AlexeyAB's random=1): one network per size.

Darknet's resize_network reallocates every layer for the new width and height and keeps the
parameters.  Here the training run keeps its network (the one at the cfg's size, which is the
one saved) and builds, once per size the data asks for, a second network from the same cfg
sections at that size.  Before a step the training state (parameters, batch-norm statistics,
momentum buffers, `seen`) is copied into the network of the step's size and afterwards back,
so checkpoints, the NaN check and resuming see one network whatever size the step ran at.
"""
import warnings

import numpy as np

from .errors import MiniDarknetError


class SizedNetworks:
    def __init__(self, net):
        self.base = net
        self.nets = {(net.w, net.h): net}

    def network(self, size):
        """The network for input size (w, h) (None: the base network), holding the base's
        current state."""
        if size is None or tuple(size) == (self.base.w, self.base.h):
            return self.base
        net = self.nets.get(tuple(size))
        if net is None:
            net = self.nets[tuple(size)] = self._build(*size)
        _copy_state(self.base, net)
        net.seen = self.base.seen
        return net

    def finish(self, net):
        """After a step on `net`: its state goes back into the base network."""
        if net is not self.base:
            _copy_state(net, self.base)
            self.base.seen = net.seen
            self.base.rng = net.rng

    def _build(self, w, h):
        from .network import Network
        base = self.base
        try:
            with warnings.catch_warnings():
                # the same cfg, already reported when the base network was built
                warnings.simplefilter("ignore")
                return Network(base.sections, gradients=base.gradients, batch=base.batch,
                               width=w, height=h, fork=base.fork)
        except MiniDarknetError as e:
            raise MiniDarknetError(f"{base.path}: random input size {w}x{h} (AlexeyAB's "
                                   f"random=1; resize_step= sets the step): the network does "
                                   f"not build at that size: {e}") from None


def _copy_state(source, target):
    from .train import state_arrays
    targets = dict(state_arrays(target))
    for key, array in state_arrays(source):
        np.copyto(targets[key], array)
