"""The `Distiller` that `DistillerHyperModel` builds for each tuner trial.

Every trial of a search shares one frozen teacher, so a trial's weight
checkpoints hold the student side only (student, its optimizer state, the
distillation losses' own variables), and its validation loss is the
student's own loss, which ranks trials whatever their alpha and temperature.
This module does not need KerasTuner: a saved trial model loads after
`import kerasdistill`.
"""

import keras

from kerasdistill import _training
from kerasdistill import distiller


@keras.saving.register_keras_serializable(package="kerasdistill")
class TrialDistiller(distiller.Distiller):
    """A `Distiller` whose teacher is shared and left out of weight files.

    It differs from `kerasdistill.Distiller` in two ways:

    - `save_weights()` / `load_weights()` skip the teacher. KerasTuner saves
      the best epoch of every trial with `save_weights()` and restores it
      with `load_weights()` (`get_best_models()`, Hyperband's follow-up
      trials); the teacher is frozen and the same object in every trial, so
      copying it into each checkpoint would only cost disk. `save()` still
      writes a complete `.keras` file, teacher included.
    - In evaluation (`evaluate()`, the validation of `fit()`), `loss` is the
      student's own loss (the `loss` given to `compile()` plus the
      student's regularization losses), as the student compiled alone would
      report it. The training `loss` stays the distillation objective.
      `val_loss` thus ranks trials with different alpha and temperature,
      whose distillation objectives are not comparable;
      `val_distillation_loss` is still logged.

    The arguments are those of `kerasdistill.Distiller`.

    Example:

    ```python
    distiller = kerasdistill.trial.TrialDistiller(
        teacher, student, kerasdistill.LogitsDistillation(4.0)
    )
    distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    distiller.fit(x, y, validation_data=(x_val, y_val), epochs=3)
    distiller.save_weights("student_side.weights.h5")  # no teacher inside
    ```
    """

    def save_weights(self, filepath, overwrite=True, max_shard_size=None):
        """Saves every weight except the teacher's (see the class doc)."""
        keras.saving.save_weights(
            self,
            filepath,
            overwrite=overwrite,
            max_shard_size=max_shard_size,
            objects_to_skip=self.teachers,
        )

    def load_weights(self, filepath, skip_mismatch=False, **kwargs):
        """Loads weights written by `save_weights`; the teacher is kept."""
        skipped = list(kwargs.pop("objects_to_skip", None) or [])
        super().load_weights(
            filepath,
            skip_mismatch=skip_mismatch,
            objects_to_skip=skipped + self.teachers,
            **kwargs,
        )

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        """The distillation objective in training; in evaluation with
        labels and a compiled loss, the student's own loss plus its
        regularization losses (the distillation loss trackers are updated
        in both cases)."""
        if y_pred is None:
            y_pred = self(x, training=training)
        own = None
        if not training and y is not None and self.loss is not None:
            # Before the teacher runs: its forward pass may add losses.
            regularization = _training.regularization(self)
            own = (
                self._student_loss(x, y, y_pred, sample_weight, regularization)
                + regularization
            )
        total = super().compute_loss(x, y, y_pred, sample_weight, training=training)
        return total if own is None else own
