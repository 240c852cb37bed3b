"""Models whose weights are the inner problem's variables w, one file per family.

Each is built as ``Model(input_shape=..., num_outputs=..., **config)``: the runner supplies the
data set's input shape and output count, the configuration the rest. (The runner offers the
shapes by name, only to constructors that list them: ``input_shape``, ``num_outputs``,
``in_features``, ``num_classes``, ``in_channels``; see
:func:`hpo_cli.runner.config.build.shape_offers`.
Any ``torch.nn.Module`` class or factory elsewhere works by ``model._target_``.) Every model
maps inputs (b, *input_shape) to outputs (b, num_outputs); one that cannot take the data set's
inputs (a convolutional network on flat regression features) says so in one line.
"""

from hpo_cli.models.activations import ACTIVATIONS
from hpo_cli.models.lenet import LeNet
from hpo_cli.models.linear import Linear, TwoLayerLinear
from hpo_cli.models.mlp import MLP
from hpo_cli.models.resnet import resnet18

__all__ = ["ACTIVATIONS", "MLP", "LeNet", "Linear", "TwoLayerLinear", "resnet18"]
