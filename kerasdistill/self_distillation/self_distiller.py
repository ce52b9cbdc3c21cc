"""Self-distillation: a model is its own teacher.

The teacher is a frozen copy of the model holding a *different* state of its
weights: a snapshot taken every few epochs, or the exponential moving average
of the weights. It cannot be the model's own output of the same step behind a
stop-gradient: that target equals the prediction, so its loss and gradient
are zero (the model learns nothing from it).
"""

import keras
from keras import ops

from kerasdistill import checks
from kerasdistill import distiller as distiller_module
from kerasdistill import distribute
from kerasdistill import model_configs
from kerasdistill import variables
from kerasdistill.self_distillation import loss_choice

_TEACHERS = ("snapshot", "ema")


@keras.saving.register_keras_serializable(package="kerasdistill")
class SelfDistiller(distiller_module.Distiller):
    """Trains `model` on its labels and on the outputs of an earlier state of
    itself, on every Keras backend (TensorFlow, JAX, PyTorch).

    The teacher is a frozen clone of `model` (`keras.models.clone_model` plus
    its weights), run in inference mode:

    - `teacher="snapshot"`: the clone takes the model's weights at the end of
      every `snapshot_interval`-th epoch. Before the first snapshot there is
      no teacher yet: the distillation term is 0, so the loss is `alpha *
      student_loss`.
    - `teacher="ema"`: the mean teacher. Each teacher weight `t` becomes
      `d * t + (1 - d) * w`, where `w` is the model's weight and
      `d = min(ema_decay, 1 - 1 / (n + 1))` (`n`: the updates made so far,
      the mean teacher's ramp-up, so that the first states are averaged
      evenly). Moving statistics (batch normalization) are averaged too. The
      update runs inside the compiled train step, in `compute_loss`, before
      the teacher: step `k` averages in the weights its gradient starts
      from (those left by step `k - 1`) and then learns from that teacher,
      which is the teacher of Tarvainen & Valpola's step `k`. The teacher
      *stored* after step `k` therefore lags one update behind the paper's
      (it has not yet averaged in step `k`'s result); the next step, or the
      next `fit()`, averages it in first.

    The loss is that of `kerasdistill.Distiller`: `alpha * student_loss +
    (1 - alpha) * sum_i w_i * distillation_loss_i`, with any distillation loss
    of the package: `LogitsDistillation` (soft targets) for classification,
    `RegressionDistillation` (`"mse"`, `"huber"`, `"teacher_bounded"`...) for
    regression, `FeatureDistillation(loss, "hidden", "hidden")` to pull a
    hidden layer toward the same layer of the teacher state.

    Without `distillation_losses`, the loss is chosen from the `loss` given
    to `compile()`:

    - a cross-entropy (`SparseCategoricalCrossentropy`,
      `CategoricalCrossentropy`, or their names / functions):
      `LogitsDistillation(temperature=1.0, from_logits=<the loss's>)`, with
      `loss="soft_cross_entropy"` under `progressive_alpha` (PS-KD's loss)
      and `"kl_divergence"` otherwise;
    - mean squared / absolute error: `RegressionDistillation("mse")` /
      `("mae")`; Huber: `RegressionDistillation("huber", delta=<its delta>)`.

    Any other loss (binary cross-entropy, a custom function, one loss per
    output) is refused with a `ValueError`: pass `distillation_losses`.

    Progressive targets (PS-KD): with `progressive_alpha=alpha_T`, the target
    at epoch `t` (counted from 1) is `(1 - alpha_t) * y + alpha_t * p_teacher`
    with `alpha_t = alpha_T * t / T` (`T`: `progressive_epochs`, by default
    the `epochs` given to `fit()`; `alpha_t` stays at `alpha_T` after epoch
    `T`), and `alpha_t = 0` while there is no teacher (the first epoch, as in
    the paper's code, where the first epoch learns from the labels). The
    cross-entropy is linear in its target, so this is the Distiller's loss
    with `student_loss_weight = 1 - alpha_t` and
    `LogitsDistillation(temperature=1.0, loss="soft_cross_entropy")`; for
    regression, `RegressionDistillation("mse")` with an `"mse"` loss gives
    the gradients of the mse to the mixed target. `fit()` assigns
    `student_loss_weight` at the start of every epoch (it is logged as
    `alpha`), so it refuses a `kerasdistill.callbacks.AlphaScheduler` in its
    callbacks; without `progressive_alpha`, an `AlphaScheduler` drives alpha
    as for any `Distiller`.

    `fit()` adds the callback that takes the snapshots and sets `alpha_t`;
    epochs are counted by `fit`'s epoch index (resume with `initial_epoch`),
    as `keras.callbacks.LearningRateScheduler` does. `refresh_teacher()`
    takes a snapshot at any time (from a callback too: under JAX it syncs
    the training state first). On a batch without labels the loss is the
    distillation term alone (the mean teacher's consistency loss on
    unlabeled data); it is 0 before a snapshot teacher's first snapshot.

    Args:
        model: The `keras.Model` to train (built, and copyable by
            `keras.models.clone_model`). It is trained in place.
        teacher: `"snapshot"` or `"ema"`.
        distillation_losses: A distillation loss or a list of them; `None`
            (default) chooses one from the `loss` given to `compile()` (see
            above).
        distillation_loss_weights: One weight >= 0 per loss. Defaults to 1.0
            each.
        student_loss_weight: `alpha`, in [0, 1]. Defaults to 0.5. Not
            allowed with `progressive_alpha`, which sets it every epoch.
        snapshot_interval: Epochs between snapshots, an integer >= 1
            (`teacher="snapshot"` only). Defaults to 1.
        ema_decay: The decay `d`, in (0, 1) (`teacher="ema"` only). Defaults
            to 0.99. A variable: assign `distiller.ema_decay = 0.999` to
            change it without tracing again.
        progressive_alpha: PS-KD's `alpha_T` in (0, 1], the teacher's share
            of the target at epoch `T`; `None` (default) for a fixed
            `student_loss_weight`.
        progressive_epochs: PS-KD's `T`, an integer >= 1; defaults to the
            `epochs` of each `fit()` call. Only with `progressive_alpha`.
        name: The model's name.
        **kwargs: Passed to `keras.Model`.

    Example:

    ```python
    # Classification, PS-KD: last epoch's model softens the targets. The
    # loss, LogitsDistillation(1.0, "soft_cross_entropy"), is chosen from
    # the compiled cross-entropy.
    distiller = kerasdistill.SelfDistiller(
        model, teacher="snapshot", progressive_alpha=0.8
    )
    distiller.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True), metrics=["accuracy"])
    distiller.fit(x, y, epochs=30)

    # Regression, mean teacher, plus a hidden layer pulled toward the
    # teacher's.
    distiller = kerasdistill.SelfDistiller(
        regressor, teacher="ema", ema_decay=0.99,
        distillation_losses=[
            kerasdistill.RegressionDistillation("huber"),
            kerasdistill.FeatureDistillation("mse", "hidden", "hidden"),
        ],
    )
    distiller.compile("adam", "mse")
    distiller.fit(x, y, epochs=30)
    model.save("model.keras")  # `model` itself was trained
    ```

    Reference:
        Kim et al., "Self-Knowledge Distillation with Progressive Refinement
        of Targets", ICCV 2021. https://arxiv.org/abs/2006.12000
        Tarvainen & Valpola, "Mean teachers are better role models", NeurIPS
        2017. https://arxiv.org/abs/1703.01780
    """

    def __init__(
        self,
        model,
        teacher="snapshot",
        distillation_losses=None,
        distillation_loss_weights=None,
        student_loss_weight=None,
        snapshot_interval=None,
        ema_decay=None,
        progressive_alpha=None,
        progressive_epochs=None,
        name="self_distiller",
        **kwargs,
    ):
        checks.check_model(model, "model")
        checks.check_choice(teacher, _TEACHERS, "teacher")
        if teacher == "snapshot":
            _refuse(ema_decay, "ema_decay", 'teacher="ema"', teacher)
            snapshot_interval = 1 if snapshot_interval is None else snapshot_interval
            checks.check_positive_int(snapshot_interval, "snapshot_interval")
        else:
            _refuse(
                snapshot_interval, "snapshot_interval", 'teacher="snapshot"', teacher
            )
            ema_decay = 0.99 if ema_decay is None else ema_decay
            checks.check_open_unit_interval(ema_decay, "ema_decay")
        if progressive_alpha is None:
            if progressive_epochs is not None:
                raise ValueError(
                    "Received progressive_epochs="
                    f"{progressive_epochs} without progressive_alpha. Pass "
                    "progressive_alpha (PS-KD's alpha_T, e.g. 0.8) to mix the "
                    "teacher into the targets, or drop progressive_epochs."
                )
            alpha = 0.5 if student_loss_weight is None else student_loss_weight
        else:
            _check_progressive_alpha(progressive_alpha)
            if student_loss_weight is not None:
                raise ValueError(
                    "Received both progressive_alpha="
                    f"{progressive_alpha} and student_loss_weight="
                    f"{student_loss_weight}. With progressive_alpha, fit() "
                    "sets student_loss_weight = 1 - alpha_t every epoch; "
                    "pass only one of them."
                )
            if progressive_epochs is not None:
                checks.check_positive_int(progressive_epochs, "progressive_epochs")
            alpha = 1.0
        choose_loss = distillation_losses is None
        if choose_loss and distillation_loss_weights is not None:
            raise ValueError(
                "Expected distillation_loss_weights only with "
                "distillation_losses (one weight per loss). Received "
                f"distillation_loss_weights={distillation_loss_weights} and "
                "distillation_losses=None, which chooses one loss from "
                "compile(loss=...). Pass the losses too, or drop the weights."
            )
        super().__init__(
            _frozen_copy(model),
            model,
            [] if choose_loss else distillation_losses,
            distillation_loss_weights=distillation_loss_weights,
            student_loss_weight=alpha,
            name=name,
            **kwargs,
        )
        self.teacher_type = teacher
        self.snapshot_interval = snapshot_interval
        self.progressive_alpha = progressive_alpha
        self.progressive_epochs = progressive_epochs
        self._choose_loss = choose_loss
        if choose_loss:
            # The weight of the loss compile() chooses, created now: a saved
            # model's own variables load by position, so they must come in
            # the order of a SelfDistiller given that loss (as it is loaded).
            self._distillation_loss_weights = [
                variables.non_trainable("distillation_loss_weight_0", 1.0)
            ]
        self._ema_decay = (
            None
            if ema_decay is None
            else variables.non_trainable("ema_decay", ema_decay)
        )
        self._ema_updates = (
            None if ema_decay is None else variables.non_trainable("ema_updates", 0.0)
        )
        self._teacher_ready = variables.non_trainable(
            "teacher_ready", 1.0 if teacher == "ema" else 0.0
        )

    @property
    def ema_decay(self):
        """The EMA decay variable (`None` for a snapshot teacher); assign a
        number in (0, 1) to change it."""
        return self._ema_decay

    @ema_decay.setter
    def ema_decay(self, value):
        if self._ema_decay is None:
            raise ValueError(
                'ema_decay applies to teacher="ema" only. Received: '
                f"ema_decay={value} on a SelfDistiller with "
                f'teacher="{self.teacher_type}". Build it with '
                'teacher="ema" to average the weights.'
            )
        checks.check_open_unit_interval(value, "ema_decay")
        self._ema_decay.assign(float(value))

    @property
    def teacher_ready(self):
        """Whether the teacher holds a state to learn from (always for EMA;
        after the first snapshot for a snapshot teacher)."""
        return variables.read(self._teacher_ready) > 0.5

    def refresh_teacher(self):
        """Copies the model's current weights into the teacher.

        May be called between `fit()` calls or from a callback: under JAX,
        where the weights of a running `fit()` live in the compiled step's
        state, it syncs that state into the variables first.
        """
        sync = getattr(self, "jax_state_sync", None)  # JAX's trainer only
        if sync is not None:
            sync()
        for teacher_weight, weight in zip(self.teacher.weights, self.student.weights):
            # A copy: under JAX, two variables holding one buffer could not
            # both be donated to the compiled train step.
            teacher_weight.assign(ops.copy(weight))
        self._teacher_ready.assign(1.0)

    def progressive_share(self, epoch, total_epochs):
        """PS-KD's `alpha_t` for the 0-based `epoch` of `total_epochs`:
        `alpha_T * min(epoch + 1, T) / T`, or 0 while there is no teacher."""
        if self.progressive_alpha is None or not self.teacher_ready:
            return 0.0
        return self.progressive_alpha * min(epoch + 1, total_epochs) / total_epochs

    def compile(self, optimizer="adam", loss=None, metrics=None, **kwargs):
        """`Distiller.compile`; without `distillation_losses` given to the
        constructor, also chooses the distillation loss from `loss` (see
        the class docstring).

        Example:

        ```python
        distiller = kerasdistill.SelfDistiller(model, "ema")
        distiller.compile("adam", "mse")  # RegressionDistillation("mse")
        ```
        """
        if self._choose_loss:
            # In the strategy's scope, where a TensorFlow strategy wants the
            # loss's temperature variable (as Distiller.compile does).
            with distribute.scope(distribute.strategy_of(self)):
                self._set_chosen_loss(
                    loss_choice.distillation_loss_for(
                        loss, self.progressive_alpha is not None
                    )
                )
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def _set_chosen_loss(self, chosen):
        if self.distillation_losses:
            current = self.distillation_losses[0]
            if loss_choice.description(current) != loss_choice.description(chosen):
                raise ValueError(
                    "Expected compile() to be given a loss of the kind this "
                    "SelfDistiller chose its distillation loss from before: "
                    f"{loss_choice.description(current)}. Received a loss that gives "
                    f"{loss_choice.description(chosen)}. Build a new SelfDistiller, or "
                    "pass distillation_losses to the constructor."
                )
            return
        chosen.prepare(self.teacher, self.student)
        # The loss-dependent state the Distiller's constructor creates for
        # each loss (its weight variable exists already, and one loss logs
        # no term of its own): the loss and, for a temperature, the metric
        # that logs it.
        self.distillation_losses = [chosen]
        self._set_temperature_trackers()

    def fit(
        self,
        x=None,
        y=None,
        batch_size=None,
        epochs=1,
        verbose="auto",
        callbacks=None,
        **kwargs,
    ):
        """`keras.Model.fit`, plus the callback that takes the snapshots and
        sets PS-KD's `alpha_t` each epoch. With `progressive_alpha`, a
        `kerasdistill.callbacks.AlphaScheduler` among `callbacks` is
        refused: both would set `student_loss_weight`."""
        listed = (
            callbacks.callbacks
            if isinstance(callbacks, keras.callbacks.CallbackList)
            else list(callbacks or [])
        )
        self._check_no_alpha_scheduler(listed)
        if getattr(self, "_count_ema_updates_from_optimizer", False):
            self._ema_updates.assign(float(variables.read(self.optimizer.iterations)))
            self._count_ema_updates_from_optimizer = False
        schedule = _TeacherSchedule()
        if isinstance(callbacks, keras.callbacks.CallbackList):
            callbacks.append(schedule)
        else:
            callbacks = listed + [schedule]
        return super().fit(
            x,
            y,
            batch_size=batch_size,
            epochs=epochs,
            verbose=verbose,
            callbacks=callbacks,
            **kwargs,
        )

    def load_own_variables(self, store):
        """Loads this model's own variables; a file of kerasdistill 0.1.0
        has no `ema_updates` (it counted the optimizer's iterations), which
        is then read from the loaded optimizer when `fit()` starts."""
        own = [
            v
            for v in (
                self._student_loss_weight,
                *self._distillation_loss_weights,
                self._ema_decay,
                self._ema_updates,
                self._teacher_ready,
            )
            if v is not None
        ]
        if self._ema_updates is None or len(store.keys()) != len(own) - 1:
            return super().load_own_variables(store)
        older = [v for v in own if v is not self._ema_updates]
        for index, variable in enumerate(older):
            variable.assign(store[str(index)])
        self._count_ema_updates_from_optimizer = True

    def _check_no_alpha_scheduler(self, callbacks):
        if self.progressive_alpha is None:
            return  # the user's AlphaScheduler alone sets alpha
        from kerasdistill.schedules import callbacks as callbacks_module

        schedulers = [
            type(c).__name__
            for c in callbacks
            if isinstance(c, callbacks_module.AlphaScheduler)
        ]
        if schedulers:
            raise ValueError(
                "Expected no AlphaScheduler in fit()'s callbacks of a "
                f"SelfDistiller with progressive_alpha={self.progressive_alpha}: "
                "PS-KD sets student_loss_weight = 1 - alpha_t at the start "
                "of every epoch, so one of the two schedules would be "
                f"silently lost. Received: callbacks with {schedulers}. Drop "
                "the AlphaScheduler (progressive_alpha and progressive_epochs "
                "set PS-KD's schedule), or build the SelfDistiller without "
                "progressive_alpha to schedule alpha yourself."
            )

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        """`Distiller.compute_loss`; in a training step of an EMA teacher,
        the teacher first averages in the model's current weights (see the
        class docstring). Pass `training=False` to compute the loss without
        updating the teacher."""
        if training and self.teacher_type == "ema":
            self._update_ema()
        return super().compute_loss(
            x, y, y_pred, sample_weight=sample_weight, training=training
        )

    def _update_ema(self):
        """Averages the model's current weights into the teacher. Runs
        inside the train step: under JAX the assignments are part of the
        step's returned state, under TensorFlow they are ordered before the
        teacher's forward pass, under PyTorch they run eagerly."""
        count = self._ema_updates
        decay = ops.minimum(self._ema_decay, 1.0 - 1.0 / (count + 1.0))
        for teacher_weight, weight in zip(self.teacher.weights, self.student.weights):
            value = ops.stop_gradient(ops.convert_to_tensor(weight))
            if "float" not in str(teacher_weight.dtype):
                teacher_weight.assign(value)
                continue
            d = ops.cast(decay, teacher_weight.dtype)
            teacher_weight.assign(
                d * teacher_weight + (1.0 - d) * ops.cast(value, teacher_weight.dtype)
            )
        count.assign(count + 1.0)

    def _teacher_taps(self, view, cached):
        if cached is not None:
            raise ValueError(
                "Expected the inputs themselves: a SelfDistiller's teacher "
                "changes during training (snapshot or EMA), so outputs cached "
                "by kerasdistill.cache_teacher_outputs would be stale. "
                "Received a batch of cached teacher outputs. Fit on the "
                "inputs."
            )
        return super()._teacher_taps(view, cached)

    def _distillation_terms(self, *args, **kwargs):
        """The Distiller's terms, 0 while there is no teacher yet."""
        return [
            self._teacher_ready * term
            for term in super()._distillation_terms(*args, **kwargs)
        ]

    def get_config(self):
        config = super().get_config()
        config.pop("teacher")
        config["model"] = config.pop("student")
        config.update(
            {
                "teacher": self.teacher_type,
                "snapshot_interval": self.snapshot_interval,
                "ema_decay": (
                    None if self._ema_decay is None else variables.read(self._ema_decay)
                ),
                "progressive_alpha": self.progressive_alpha,
                "progressive_epochs": self.progressive_epochs,
            }
        )
        if self._choose_loss and not self.distillation_losses:
            # Not compiled yet: the loss is still to be chosen.
            config["distillation_losses"] = None
            config["distillation_loss_weights"] = None
        if self.progressive_alpha is not None:
            config["student_loss_weight"] = None
        return config

    @classmethod
    def from_config(cls, config):
        return cls(
            **model_configs.deserialized(config, ["model", "distillation_losses"])
        )


class _TeacherSchedule(keras.callbacks.Callback):
    """Added by `SelfDistiller.fit`: sets PS-KD's `alpha_t` at the start of
    each epoch and takes the snapshot at the end of every
    `snapshot_interval`-th epoch (`self.model` syncs JAX's state first)."""

    def on_epoch_begin(self, epoch, logs=None):
        distiller = self.model
        if distiller.progressive_alpha is None:
            return
        total = distiller.progressive_epochs or self.params["epochs"]
        distiller.student_loss_weight = 1.0 - distiller.progressive_share(epoch, total)

    def on_epoch_end(self, epoch, logs=None):
        distiller = self.model
        if distiller.teacher_type == "snapshot" and (
            (epoch + 1) % distiller.snapshot_interval == 0
        ):
            distiller.refresh_teacher()


def _frozen_copy(model):
    """A clone of `model` holding its current weights."""
    if not model.built:
        raise ValueError(
            f"Expected a built model to copy as its own teacher. Received "
            f"the unbuilt model '{model.name}'. Give it an input shape "
            "(keras.Input or model.build(input_shape)) or call it on a batch "
            "first."
        )
    try:
        copy = keras.models.clone_model(model)
        if not copy.built:
            copy.build_from_config(model.get_build_config())
        copy.set_weights(model.get_weights())
    except (ValueError, TypeError, NotImplementedError) as error:
        raise ValueError(
            f"Expected a model that keras.models.clone_model can copy (a "
            f"functional or Sequential model, or a subclassed model with "
            f"get_config). Copying '{model.name}' failed: {error}"
        ) from error
    return copy


def _refuse(value, name, applies_to, teacher):
    if value is not None:
        raise ValueError(
            f"{name} applies to {applies_to} only. Received: {name}={value} "
            f'with teacher="{teacher}". Drop {name}, or use {applies_to}.'
        )


def _check_progressive_alpha(value):
    checks.check_number(value, "progressive_alpha")
    if not 0.0 < value <= 1.0:
        raise ValueError(
            "Expected progressive_alpha (PS-KD's alpha_T) in (0, 1]. "
            f"Received: progressive_alpha={value}"
        )
