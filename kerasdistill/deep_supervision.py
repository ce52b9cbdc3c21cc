"""Deep supervision (Be Your Own Teacher): auxiliary heads on intermediate
layers learn from the labels and from the model's final head."""

import copy

import keras
import tensorflow as tf
from keras import ops
from keras.src.losses.loss import unscale_loss_for_distribution

from kerasdistill import _training
from kerasdistill import checks
from kerasdistill import taps


@keras.saving.register_keras_serializable(package="kerasdistill")
class DeepSupervision(keras.Model):
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
                f"names. Received: head_layers={head_layers!r}"
            )
        outputs = checks.symbolic_outputs(model)
        if not outputs:
            raise ValueError(
                "Expected a functional or Sequential model, whose layers can "
                f"feed heads. Received the subclassed model '{model.name}' "
                f"({type(model).__name__}). Rebuild it with the functional API."
            )
        if len(outputs) != 1:
            raise ValueError(
                "Expected a model with one output. Received "
                f"'{model.name}' with {len(outputs)} outputs."
            )
        features = {
            layer: taps.find_layer(model, layer, "model").output
            for layer in head_layers
        }
        heads = _default_heads(model, features) if heads is None else _check_heads(
            heads, head_layers
        )
        self.model = model
        self.head_layers = list(head_layers)
        self.heads = heads
        self.distillation_loss = _training.output_distillation_loss(
            distillation_loss, "DeepSupervision"
        )
        self.distillation_loss.validate_model_compatibility(model, model)
        self._student_loss_weight = _training.non_trainable(
            "student_loss_weight", student_loss_weight
        )
        head_outputs = [heads[layer](features[layer]) for layer in self.head_layers]
        for layer, output in zip(self.head_layers, head_outputs):
            if tuple(output.shape[1:]) != tuple(outputs[0].shape[1:]):
                raise ValueError(
                    f"Expected the head of '{layer}' to output the model's "
                    f"shape {tuple(outputs[0].shape)}. Received "
                    f"{tuple(output.shape)}."
                )
        self._network = keras.Model(
            model.input, [outputs[0], head_outputs], name=f"{model.name}_with_heads"
        )
        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self.head_loss_tracker = keras.metrics.Mean(name="head_loss")
        self.distillation_loss_tracker = keras.metrics.Mean(name="distillation_loss")
        self.built = True

    student_loss_weight = _training.student_loss_weight

    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        _training.require_labels(y, "DeepSupervision")
        with tf.GradientTape() as tape:
            final, heads = self._network(x, training=True)
            loss = self.compute_loss(
                x, y, final, sample_weight, training=True, head_outputs=heads
            )
            self._loss_tracker.update_state(
                unscale_loss_for_distribution(loss),
                sample_weight=_training.batch_size(x),
            )
            loss = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        gradients = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        return self.compute_metrics(x, y, final, sample_weight=sample_weight)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        _training.require_labels(y, "DeepSupervision")
        final, heads = self._network(x, training=False)
        loss = self.compute_loss(
            x, y, final, sample_weight, training=False, head_outputs=heads
        )
        self._loss_tracker.update_state(
            unscale_loss_for_distribution(loss), sample_weight=_training.batch_size(x)
        )
        return self.compute_metrics(x, y, final, sample_weight=sample_weight)

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

        Args:
            x: The inputs.
            y: The labels.
            y_pred: The final output; computed with the heads when `None`.
            sample_weight: Optional per-sample weights.
            training: Whether this is a training step.
            head_outputs: The heads' outputs, in `head_layers` order.

        Returns:
            A float32 scalar tensor.
        """
        if y_pred is None or head_outputs is None:
            y_pred, head_outputs = self._network(x, training=training)
        final_loss = self._label_loss(y, y_pred, sample_weight)
        head_loss = ops.zeros((), dtype="float32")
        distillation = ops.zeros((), dtype="float32")
        for head in head_outputs:
            head_loss = head_loss + self._label_loss(y, head, sample_weight)
            distillation = distillation + _training.distillation_value(
                self.distillation_loss, y_pred, head, y, sample_weight
            )
        alpha = self._student_loss_weight
        total = final_loss + alpha * head_loss + (1.0 - alpha) * distillation
        total = total + _training.regularization(self, self._network)
        batch = _training.batch_size(x)
        for tracker, value in [
            (self.student_loss_tracker, final_loss),
            (self.head_loss_tracker, head_loss),
            (self.distillation_loss_tracker, distillation),
        ]:
            tracker.update_state(unscale_loss_for_distribution(value), sample_weight=batch)
        return total

    def _label_loss(self, y, y_pred, sample_weight):
        if self._compile_loss is None:
            raise ValueError(
                "DeepSupervision needs the labels' loss. Received compile() "
                "without `loss`. Pass e.g. loss=keras.losses."
                "SparseCategoricalCrossentropy(from_logits=True) or loss=\"mse\"."
            )
        return ops.cast(self._compile_loss(y, y_pred, sample_weight), "float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "model": _training.serialize_uncompiled(self.model),
                "head_layers": self.head_layers,
                "distillation_loss": keras.saving.serialize_keras_object(
                    self.distillation_loss
                ),
                "heads": {
                    layer: keras.saving.serialize_keras_object(head)
                    for layer, head in self.heads.items()
                },
                "student_loss_weight": float(self._student_loss_weight.numpy()),
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = copy.deepcopy(config)
        for key in ("model", "distillation_loss"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        config["heads"] = {
            layer: keras.saving.deserialize_keras_object(head)
            for layer, head in config["heads"].items()
        }
        return cls(**config)


def _default_heads(model, features):
    output = checks.symbolic_outputs(model)[0]
    activation = getattr(output._keras_history.operation, "activation", None)
    activation = keras.activations.serialize(activation) if activation else None
    if isinstance(output._keras_history.operation, keras.layers.Softmax):
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
            f"{list(head_layers)} to a keras layer. Received: {keys!r}"
        )
    for layer, head in heads.items():
        if not isinstance(head, keras.layers.Layer):
            raise TypeError(
                f"Expected the head of '{layer}' to be a keras layer or model. "
                f"Received: {head!r} of type {type(head).__name__}"
            )
    return dict(heads)
