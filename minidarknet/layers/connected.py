"""[connected] / [conn]: fully connected, y = act(x @ W.T + b) or act(BN(x @ W.T)).

Weights file order: biases[out], weights[out][in], then with batch_normalize scales,
rolling_mean, rolling_variance (after the weights, unlike [convolutional]).
"""
import numpy as np

from .base import WeightedLayer, uniform_weights
from .batchnorm import bn_backward, bn_forward
from .registry import register


@register("connected", "conn")
class Connected(WeightedLayer):
    type = "connected"
    blas_threads = True

    def __init__(self, section, shape, net):
        super().__init__(section, shape, net)
        n = section.int("output", 1)
        if n < 1:
            raise section.error(f"[connected] output={n}: must be at least 1", "output")
        if shape.inputs < 1:
            raise section.error(f"[connected]: the layer before outputs {shape.inputs} values")
        self.activation = self.activation_from(section, "logistic")
        self.batch_normalize = section.int("batch_normalize", 0)
        self.set_output_shape(n, 1, 1)
        self.check_count(n * shape.inputs, f"weights {n} x {shape.inputs}", "output",
                         bytes_per_value=4)
        # Darknet's initialisation (used when no weights file is loaded): sqrt(2/inputs)*U(-1,1).
        self.init_parameters(uniform_weights(net.rng, (n, shape.inputs),
                                             np.sqrt(2.0 / shape.inputs)), n)
        self.x_pre = None
        self.allocate(shape.batch)

    def forward(self, net):
        x = net.input.reshape(self.batch, self.inputs)
        out = self.output.reshape(self.batch, self.outputs)
        np.matmul(x, self.weights.T, out=out)
        self.train = net.train
        if self.batch_normalize:
            bn_forward(self, out[:, :, None], net.train,
                       momentum=self.fork.bn_connected_rolling_momentum)
        else:
            out += self.biases
        if self.activation.needs_input(self.exact):
            self.x_pre = self.output.copy()   # (B, n, 1, 1), the shape of delta
        self.activation.forward(self.output, self.output)

    def backward(self, net):
        self.activation.backprop(self.delta, self.output, self.x_pre, self.exact)
        delta = self.delta.reshape(self.batch, self.outputs)
        if self.batch_normalize:
            # Both forks' connected layers accumulate the bias updates (AlexeyAB's itself).
            bn_backward(self, delta[:, :, None], self.train)
        else:
            self.bias_updates += delta.sum(axis=0)
        x = net.input.reshape(self.batch, self.inputs)
        self.weight_updates += delta.T @ x
        if net.delta is not None:
            prev = net.delta.reshape(self.batch, self.inputs)
            prev += delta @ self.weights

    def parameters(self):
        params = [("biases", self.biases), ("weights", self.weights)]
        if self.batch_normalize and not self.dontloadscales:
            params += [("scales", self.scales), ("rolling_mean", self.rolling_mean),
                       ("rolling_variance", self.rolling_variance)]
        return params

    def read_weights(self, reader, transpose):
        for name, array in self.parameters():
            values = reader.read(array.size, self, name)
            if name == "weights" and transpose:
                # Files with major/minor > 1000 store [in][out].
                values = values.reshape(array.shape[::-1]).T
            array[...] = values.reshape(array.shape)

    def write_weights(self, out, transpose):
        for name, array in self.parameters():
            if name == "weights" and transpose:
                array = array.T
            out.append(np.ascontiguousarray(array, "<f4").tobytes())

    def flops(self):
        return 2.0 * self.inputs * self.outputs

    def describe(self):
        return "", "", f"{self.inputs}", f"{self.outputs}"
