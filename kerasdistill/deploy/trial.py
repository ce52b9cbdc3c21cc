"""The `Distiller` that `DistillerHyperModel` builds for each tuner trial.

Every trial of a search shares one frozen teacher, so a trial's weight
checkpoints hold the student side only (student, its optimizer state, the
distillation losses' own variables). This module does not need
KerasTuner: a saved trial model loads after `import kerasdistill`.
"""

import keras

from kerasdistill import distiller


@keras.saving.register_keras_serializable(package="kerasdistill")
class TrialDistiller(distiller.Distiller):
    """A `Distiller` whose teacher is shared and left out of weight files.

    It differs from `kerasdistill.Distiller` in one way: `save_weights()` /
    `load_weights()` skip the teacher. KerasTuner saves the best epoch of
    every trial with `save_weights()` and restores it with `load_weights()`
    (`get_best_models()`, Hyperband's follow-up trials); the teacher is
    frozen and the same object in every trial, so copying it into each
    checkpoint would only cost disk. `save()` still writes a complete
    `.keras` file, teacher included. Its logs mean what a `Distiller`'s do:
    `val_loss` is the distillation objective, which depends on the trial's
    alpha and temperature, so rank trials by `val_student_loss` (the
    student's loss on the labels) or a student metric.

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
