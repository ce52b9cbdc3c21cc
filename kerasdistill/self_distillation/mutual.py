"""Deep mutual learning: two or more models train together, each learning
from the labels and from the others.

Like the `Distiller`, it overrides `call` and `compute_loss` (and
`compute_metrics`) and leaves the train and test steps to Keras's own
trainers, so it runs on TensorFlow, JAX and PyTorch: `call` runs every model
once and returns their outputs, which reach `compute_loss` as `y_pred` in
the same trace.
"""

import itertools

import keras
from keras import ops

from kerasdistill import _keras_internals
from kerasdistill import checks
from kerasdistill import labels
from kerasdistill import logs
from kerasdistill import model_configs
from kerasdistill import reduction
from kerasdistill import variables
from kerasdistill.losses import base
from kerasdistill.self_distillation import loss_choice


@keras.saving.register_keras_serializable(package="kerasdistill")
class MutualLearning(
    variables.StudentLossWeight, _keras_internals.CompileFromConfig, keras.Model
):
    """Trains `models` together, each distilling from the others (DML).

    The loss of model `k` on a batch is

        alpha * L(y, p_k) + (1 - alpha) * mean_{j != k} D(p_j, p_k)

    where `L` is the `loss` given to `compile()`, `D` the
    `distillation_loss` and `p_j` a peer's output, a stop-gradient target.
    The models are trained on the sum of their losses, so each one's
    gradient is that of its own loss; they are updated together from one
    forward pass each (the paper alternates the updates, recomputing the
    outputs in between). `alpha = 0.5` gives the paper's equal weights.

    `call()` and `predict()` return a dict `{model.name: output}`; the
    metrics given to `compile()` are computed for every model and logged as
    `{model.name}_{metric}`, with each model's loss as `{model.name}_loss`.
    Each model is trained in place: save `mutual.models[k]`.

    Args:
        models: A list of two or more `keras.Model`s with the same inputs,
            comparable outputs and distinct names.
        distillation_loss: `kerasdistill.LogitsDistillation(temperature=1.0)`
            (the paper's KL) for classification,
            `kerasdistill.RegressionDistillation(...)` for regression.
        student_loss_weight: `alpha` in [0, 1]. Defaults to 0.5. A variable.
        name: The model's name.
        **kwargs: Passed to `keras.Model`.

    Example:

    ```python
    mutual = kerasdistill.MutualLearning(
        [make_net("net_a"), make_net("net_b")],
        distillation_loss=kerasdistill.LogitsDistillation(temperature=1.0),
    )
    mutual.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True), metrics=["accuracy"])
    mutual.fit(x, y, epochs=20)  # logs net_a_accuracy, net_b_accuracy...
    mutual.models[0].save("net_a.keras")
    ```

    Reference:
        Zhang, Xiang, Hospedales & Lu, "Deep Mutual Learning", CVPR 2018.
        https://arxiv.org/abs/1706.00384
    """

    def __init__(
        self,
        models,
        distillation_loss,
        student_loss_weight=0.5,
        name="mutual_learning",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if not isinstance(models, (list, tuple)) or len(models) < 2:
            raise ValueError(
                "Expected `models` to be a list of two or more keras.Models. "
                f"Received: models={models!r}. Pass e.g. models=[model_a, "
                "model_b] (each with its own name)."
            )
        for model in models:
            checks.check_model(model, "each of `models`")
        names = [model.name for model in models]
        if len(set(names)) != len(names):
            raise ValueError(
                "Expected models with distinct names (they name the logs). "
                f"Received: {names}. Pass name=... when building each model."
            )
        checks.check_unit_interval(student_loss_weight, "student_loss_weight")
        self.distillation_loss = loss_choice.output_distillation_loss(
            distillation_loss, "MutualLearning"
        )
        for first, second in itertools.permutations(models, 2):
            checks.check_same_inputs(
                first,
                second,
                (f"'{first.name}'", f"'{second.name}'"),
                expected="every model to take the same inputs",
                fix="Build every model on the same keras.Input shapes.",
            )
            self.distillation_loss.prepare(first, second)
        self.models = list(models)
        self._student_loss_weight = variables.non_trainable(
            "student_loss_weight", student_loss_weight
        )
        self.loss_means = logs.LossMeans([f"{name}_loss" for name in names])
        if all(model.built for model in models):
            self.built = True

    @property
    def distillation_losses(self):
        """`[distillation_loss]`, as a `Distiller`'s list: what
        `kerasdistill.callbacks.TemperatureScheduler` reads."""
        return [self.distillation_loss]

    def compile(
        self, optimizer="adam", loss=None, metrics=None, weighted_metrics=None, **kwargs
    ):
        """Configures training; `loss` and `metrics` apply to every model.

        Args:
            optimizer: An optimizer name or instance (one for all models).
            loss: The supervised loss of each model.
            metrics: Metrics computed for each model: a list, or a dict
                `{model.name: list}`.
            weighted_metrics: Likewise, weighted by `sample_weight`.
            **kwargs: Passed to `keras.Model.compile`.

        Example:

        ```python
        mutual.compile("adam", "mse", metrics=["mae"])
        ```
        """
        labels.require_compile_loss(
            loss, "MutualLearning trains each model on the labels and on its peers"
        )
        super().compile(
            optimizer=optimizer,
            loss=loss,
            metrics=self._per_model(metrics),
            weighted_metrics=self._per_model(weighted_metrics),
            **kwargs,
        )

    def _per_model(self, metrics):
        if metrics is None or isinstance(metrics, dict):
            return metrics
        metrics = metrics if isinstance(metrics, (list, tuple)) else [metrics]
        return {
            model.name: [_copy_metric(metric) for metric in metrics]
            for model in self.models
        }

    def call(self, inputs, training=None):
        return {model.name: model(inputs, training=training) for model in self.models}

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Each model's compiled metrics on the labels (logged as
        `{model.name}_{metric}`) and the loss trackers."""
        labels = {name: y for name in y_pred}
        return super().compute_metrics(x, labels, y_pred, sample_weight=sample_weight)

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        """Returns the sum of the models' losses and updates the trackers.

        Args:
            x: The inputs.
            y: The labels.
            y_pred: The dict of outputs `{model.name: output}`; computed
                when `None`.
            sample_weight: Optional per-sample weights.
            training: Whether this is a training step (passed to the
                distillation loss, e.g. to update `DifficultyWeighted`'s
                running mean).

        Returns:
            A float32 scalar tensor.

        Example:

        ```python
        loss = mutual.compute_loss(x, y, mutual(x), training=False)
        ```
        """
        labels.require_labels(
            y,
            "MutualLearning learns from labels (each model's own loss) "
            "and from its peers",
        )
        if y_pred is None:
            y_pred = self(x, training=training)
        _check_outputs(y_pred, self.models)
        alpha = self._student_loss_weight
        batch = reduction.batch_size(x)
        regularization = reduction.regularization(self)
        losses = []
        for model in self.models:
            output = y_pred[model.name]
            supervised = self._label_loss(y, output, sample_weight)
            peers = [
                base.loss_value(
                    self.distillation_loss,
                    y_pred[peer.name],
                    output,
                    y,
                    sample_weight,
                    training,
                )
                for peer in self.models
                if peer is not model
            ]
            mutual = ops.mean(ops.stack(peers))
            losses.append(alpha * supervised + (1.0 - alpha) * mutual)
        self.loss_means.update_state(dict(zip(self.loss_means.names, losses)), batch)
        return sum(losses[1:], losses[0]) + regularization

    def _label_loss(self, y, output, sample_weight):
        """The compiled loss of one model's output, without the
        regularization losses (which Keras's `compute_loss` adds)."""
        loss, _ = labels.label_loss(self, y, output, sample_weight)
        return loss

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "models": model_configs.serialized(self.models),
                "distillation_loss": model_configs.serialized(self.distillation_loss),
                "student_loss_weight": variables.read(self._student_loss_weight),
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(
            **model_configs.deserialized(config, ["models", "distillation_loss"])
        )


def _check_outputs(y_pred, models):
    names = [model.name for model in models]
    if not isinstance(y_pred, dict) or sorted(y_pred) != sorted(names):
        received = sorted(y_pred) if isinstance(y_pred, dict) else type(y_pred).__name__
        raise ValueError(
            "Expected `y_pred` to be the dict {model.name: output} that "
            f"calling MutualLearning returns, with keys {names}. Received: "
            f"{received}. Pass y_pred=mutual(x), or leave it out."
        )


def _copy_metric(metric):
    if isinstance(metric, keras.metrics.Metric):
        return metric.__class__.from_config(metric.get_config())
    return metric
