"""The `Distiller` that `DistillerHyperModel` builds for each tuner trial.

Every trial of a search shares one frozen teacher, so a trial's weight
checkpoints hold the student side only (student, its optimizer state, the
distillation losses' own variables), and its validation loss is the
student's own loss, which ranks trials whatever their alpha and temperature.
This module does not need KerasTuner: a saved trial model loads after
`import kerasdistill`.
"""

import keras

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
            objects_to_skip=[self.teacher],
        )

    def load_weights(self, filepath, skip_mismatch=False, **kwargs):
        """Loads weights written by `save_weights`; the teacher is kept."""
        skipped = list(kwargs.pop("objects_to_skip", None) or [])
        super().load_weights(
            filepath,
            skip_mismatch=skip_mismatch,
            objects_to_skip=skipped + [self.teacher],
            **kwargs,
        )

    def compute_loss(
        self,
        x=None,
        y=None,
        y_pred=None,
        sample_weight=None,
        training=True,
        teacher_taps=None,
        student_taps=None,
    ):
        """The distillation objective in training; in evaluation with
        labels and a compiled loss, the student's own loss (the distillation
        loss trackers are updated in both cases)."""
        if student_taps is None:
            student_taps = self._run("student", x, training=training)
            y_pred = student_taps[0]
        total = super().compute_loss(
            x, y, y_pred, sample_weight, training=training,
            teacher_taps=teacher_taps, student_taps=student_taps,
        )
        if training or y is None or self._compile_loss is None:
            return total
        student_loss = self._student_loss(y, y_pred, sample_weight)
        for regularization in self.student.losses:
            student_loss = student_loss + keras.ops.cast(
                self._aggregate_additional_loss(regularization), "float32"
            )
        return student_loss
