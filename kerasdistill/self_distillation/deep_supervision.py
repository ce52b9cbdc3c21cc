"""Deep supervision (Be Your Own Teacher): auxiliary heads on intermediate
layers learn from the labels and from the model's final head.

Like the `Distiller`, it overrides `call`, `compute_loss` and
`compute_metrics` and leaves the train and test steps to Keras's own
trainers, so it runs on TensorFlow, JAX and PyTorch: in a training step
`call` runs the model with its heads once and returns a `StudentPass`
(the final output, and the heads' outputs as its features), which Keras
passes to `compute_loss` as `y_pred`.
"""

import keras
from keras import ops

from kerasdistill import _keras_internals
from kerasdistill import checks
from kerasdistill import labels
from kerasdistill import logs
from kerasdistill import model_configs
from kerasdistill import reduction
from kerasdistill import taps
from kerasdistill import variables
from kerasdistill.losses import base
from kerasdistill.self_distillation import loss_choice
from kerasdistill.student_pass import StudentPass


@keras.saving.register_keras_serializable(package="kerasdistill")
class DeepSupervision(
    variables.StudentLossWeight, _keras_internals.CompileFromConfig, keras.Model
):
    """Trains `model` with auxiliary heads on its named layers (BYOT).

    Each layer in `head_layers` feeds a small head that predicts what the
    model predicts. The loss of a batch is

        L(y, f) + sum_i [alpha * L(y, h_i) + (1 - alpha) * D(f, h_i)]

    plus the regularization losses, where `L` is the `loss` given to
    `compile()`, `f` the final output (a stop-gradient target in `D`), `h_i`
    the heads' outputs, `D` the `distillation_loss` and `alpha` the
    `student_loss_weight` (BYOT writes `(1 - alpha)` on the labels). The
    heads' gradients reach the layers below them: the shallow layers learn
    from the deep ones. One forward pass per step computes every output.

    The heads are not part of `model`: `call()`, `predict()` and the metrics
    use the final output only, and `deep_supervision.model` (trained in
    place) is what to save or export. Labels are required.

    Default heads: global average pooling for a feature map (rank 3 to 5),
    then `Dense(units, activation)` with the model's output units and its
    final layer's activation, named `"{layer}_head"`. Pass `heads` to use
    your own (e.g. BYOT's bottleneck convolutions).

    Args:
        model: A functional or Sequential `keras.Model` with one output.
        head_layers: Names of the layers to attach a head to.
        distillation_loss: How a head learns from the final output:
            `kerasdistill.LogitsDistillation(temperature)` for logits,
            `kerasdistill.RegressionDistillation(...)` for regression.
        heads: Optional dict `{layer_name: keras.layers.Layer}`, one head
            per entry of `head_layers`, each mapping that layer's output to
            the model's output shape.
        student_loss_weight: `alpha` in [0, 1], the heads' label-loss weight.
            Defaults to 0.5. A variable, like the Distiller's.
        name: The model's name.
        **kwargs: Passed to `keras.Model`.

    Example:

    ```python
    supervised = kerasdistill.DeepSupervision(
        model, head_layers=["block1_out", "block2_out"],
        distillation_loss=kerasdistill.LogitsDistillation(temperature=3.0),
        student_loss_weight=0.7,
    )
    supervised.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True), metrics=["accuracy"])
    supervised.fit(x, y, epochs=20)
    supervised.model.save("model.keras")  # without the heads
    ```

    Reference:
        Zhang et al., "Be Your Own Teacher: Improve the Performance of
        Convolutional Neural Networks via Self Distillation", ICCV 2019.
        https://arxiv.org/abs/1905.08094
    """

    def __init__(
        self,
        model,
        head_layers,
        distillation_loss,
        heads=None,
        student_loss_weight=0.5,
        name="deep_supervision",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        checks.check_model(model, "model")
        checks.check_unit_interval(student_loss_weight, "student_loss_weight")
        head_layers = [head_layers] if isinstance(head_layers, str) else head_layers
        if not head_layers or not all(isinstance(n, str) for n in head_layers):
            raise ValueError(
                "Expected `head_layers` to be a non-empty list of layer "
                f"names. Received: head_layers={head_layers!r}. Name the "
                "layers to attach a head to, e.g. head_layers=['block1_out']."
            )
        outputs = checks.symbolic_outputs(model)
        if not outputs:
            raise ValueError(
                "Expected a functional or Sequential model, whose layers can "
                f"feed heads. Received the subclassed model '{model.name}' "
                f"({type(model).__name__}). Rebuild it with the functional API "
                "over its own layers (weights shared)."
            )
        if len(outputs) != 1:
            raise ValueError(
                "Expected a model with one output, which the heads imitate. "
                f"Received '{model.name}' with {len(outputs)} outputs. Build "
                "a model over the output to supervise, e.g. keras.Model("
                "model.input, model.outputs[0]) (its layers are shared)."
            )
        features = {
            layer: taps.feature_spec(model, layer, "model") for layer in head_layers
        }
        heads = (
            _default_heads(model, features)
            if heads is None
            else _check_heads(heads, head_layers)
        )
        self.model = model
        self.head_layers = list(head_layers)
        self.heads = heads
        self.distillation_loss = loss_choice.output_distillation_loss(
            distillation_loss, "DeepSupervision"
        )
        self.distillation_loss.prepare(model, model)
        self._student_loss_weight = variables.non_trainable(
            "student_loss_weight", student_loss_weight
        )
        head_outputs = [heads[layer](features[layer]) for layer in self.head_layers]
        for layer, output in zip(self.head_layers, head_outputs):
            if tuple(output.shape[1:]) != tuple(outputs[0].shape[1:]):
                raise ValueError(
                    f"Expected the head of '{layer}' to output the model's "
                    f"shape {tuple(outputs[0].shape)}. Received "
                    f"{tuple(output.shape)}. End the head with the model's "
                    f"output size, e.g. keras.layers.Dense("
                    f"{outputs[0].shape[-1]})."
                )
        self._network = keras.Model(
            model.input, [outputs[0], head_outputs], name=f"{model.name}_with_heads"
        )
        self.loss_means = logs.LossMeans(
            [logs.STUDENT_LOSS, "head_loss", logs.DISTILLATION_LOSS]
        )
        self.built = True

    @property
    def distillation_losses(self):
        """`[distillation_loss]`, as a `Distiller`'s list: what
        `kerasdistill.callbacks.TemperatureScheduler` reads."""
        return [self.distillation_loss]

    def compile(self, optimizer="adam", loss=None, metrics=None, **kwargs):
        """Configures training; `loss` (required) is the labels' loss of the
        final output and of every head, `metrics` apply to the final output.

        Args:
            optimizer: An optimizer name or instance.
            loss: The supervised loss (name, instance, function).
            metrics: Metrics of the final output.
            **kwargs: Passed to `keras.Model.compile`.

        Example:

        ```python
        supervised.compile("adam", "mse", metrics=["mae"])
        ```
        """
        labels.require_compile_loss(
            loss, "DeepSupervision trains the final output and every head on the labels"
        )
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def call(self, inputs, training=None):
        """The model's final output; in a training step, a `StudentPass`
        whose features are the heads' outputs, from the same pass."""
        if not training:
            return self.model(inputs, training=training)
        final, heads = self._network(inputs, training=True)
        return StudentPass(final, dict(enumerate(heads)), inputs, None)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """The compiled metrics of the final output, and the trackers."""
        if isinstance(y_pred, StudentPass):
            y_pred = y_pred.outputs
        return super().compute_metrics(x, y, y_pred, sample_weight)

    def compute_loss(
        self,
        x=None,
        y=None,
        y_pred=None,
        sample_weight=None,
        training=True,
        head_outputs=None,
    ):
        """Returns the total loss of a batch and updates the loss trackers.

        The heads' outputs come from the `StudentPass` that `call` returned
        in a training step; for the plain final output (and no
        `head_outputs`), the model and its heads run again on `x`.

        Args:
            x: The inputs.
            y: The labels.
            y_pred: What `call` returned; computed when `None`.
            sample_weight: Optional per-sample weights.
            training: Whether this is a training step (passed to the
                distillation loss, e.g. to update `DifficultyWeighted`'s
                running mean).
            head_outputs: The heads' outputs, in `head_layers` order.

        Returns:
            A float32 scalar tensor.

        Example:

        ```python
        loss = supervised.compute_loss(x, y, supervised(x), training=False)
        ```
        """
        labels.require_labels(
            y,
            "DeepSupervision learns from labels (the final output's loss "
            "and every head's)",
        )
        if y_pred is None:
            y_pred = self(x, training=training)
        if isinstance(y_pred, StudentPass):
            head_outputs = [y_pred.features[i] for i in range(len(y_pred.features))]
            y_pred = y_pred.outputs
        elif head_outputs is None:  # the plain final output: run the heads
            y_pred, head_outputs = self._network(x, training=training)
        regularization = reduction.regularization(self)
        final_loss = self._label_loss(y, y_pred, sample_weight)
        head_loss = ops.zeros((), dtype="float32")
        distillation = ops.zeros((), dtype="float32")
        for head in head_outputs:
            head_loss = head_loss + self._label_loss(y, head, sample_weight)
            distillation = distillation + base.loss_value(
                self.distillation_loss, y_pred, head, y, sample_weight, training
            )
        alpha = self._student_loss_weight
        total = final_loss + alpha * head_loss + (1.0 - alpha) * distillation
        self.loss_means.update_state(
            dict(zip(self.loss_means.names, [final_loss, head_loss, distillation])),
            reduction.batch_size(x),
        )
        return total + regularization

    def _label_loss(self, y, y_pred, sample_weight):
        """The compiled loss on the labels, without the regularization
        losses (which Keras's `compute_loss` adds)."""
        if self.loss is None:
            raise ValueError(
                "Expected DeepSupervision to be compiled with the labels' "
                "loss. Received no `loss` (the model was not compiled, or "
                "compiled without one). Call compile() with e.g. loss="
                "keras.losses.SparseCategoricalCrossentropy(from_logits=True)"
                ' or loss="mse".'
            )
        loss, _ = labels.label_loss(self, y, y_pred, sample_weight)
        return loss

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "model": model_configs.serialized(self.model),
                "head_layers": self.head_layers,
                "distillation_loss": model_configs.serialized(self.distillation_loss),
                "heads": model_configs.serialized(self.heads),
                "student_loss_weight": variables.read(self._student_loss_weight),
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(
            **model_configs.deserialized(
                config, ["model", "distillation_loss", "heads"]
            )
        )


def _default_heads(model, features):
    output = checks.symbolic_outputs(model)[0]
    final_layer = taps.output_layer(model, output)
    activation = getattr(final_layer, "activation", None)
    activation = keras.activations.serialize(activation) if activation else None
    if isinstance(final_layer, keras.layers.Softmax):
        activation = "softmax"
    heads = {}
    for layer, feature in features.items():
        head_layers = []
        pooling = _POOLING.get(len(feature.shape))
        if pooling is not None:
            head_layers.append(pooling())
        elif len(feature.shape) != 2:
            raise ValueError(
                f"Expected the output of '{layer}' to have rank 2 to 5 for a "
                f"default head. Received shape {tuple(feature.shape)}. Pass "
                "`heads={layer: a keras layer}`."
            )
        head_layers.append(keras.layers.Dense(output.shape[-1], activation=activation))
        heads[layer] = keras.Sequential(head_layers, name=f"{layer}_head")
    return heads


_POOLING = {
    3: keras.layers.GlobalAveragePooling1D,
    4: keras.layers.GlobalAveragePooling2D,
    5: keras.layers.GlobalAveragePooling3D,
}


def _check_heads(heads, head_layers):
    if not isinstance(heads, dict) or set(heads) != set(head_layers):
        keys = sorted(heads) if isinstance(heads, dict) else heads
        raise ValueError(
            "Expected `heads` to map each layer of head_layers "
            f"{list(head_layers)} to a keras layer. Received: {keys!r}. "
            "Give one head per layer, e.g. heads={name: keras.layers.Dense("
            "units) for name in head_layers}, or leave `heads` out for the "
            "default heads."
        )
    for layer, head in heads.items():
        if not isinstance(head, keras.layers.Layer):
            raise TypeError(
                f"Expected the head of '{layer}' to be a keras layer or model. "
                f"Received: {head!r} of type {type(head).__name__}. Pass a "
                "layer instance, e.g. keras.layers.Dense(units)."
            )
    return dict(heads)
