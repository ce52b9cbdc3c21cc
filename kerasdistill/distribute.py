"""The Distiller under `tf.distribute`: where its parts must be created, and
the compile options that TensorFlow cannot run on several replicas.

The rules, checked when the `Distiller` is created and compiled:

- The student and the `Distiller` are created inside `strategy.scope()`
  (the same one): the student's variables must be mirrored so that every
  replica applies the same update, and the `Distiller` remembers the
  strategy it was created in (`fit()` outside the scope still uses it).
- The teacher may be created (or loaded) inside or outside the scope; it is
  only read. Inside is faster with several GPUs (each reads its own copy)
  and needed on TPUs.
- `compile()` may be called inside or outside the scope (it enters the
  `Distiller`'s), but not inside the scope of another strategy; an optimizer
  instance must be created inside the scope.

Losses are reduced as Keras reduces its own: each replica's loss is its
batch mean divided by the number of replicas, so the gradients summed over
the replicas are those of the global batch.
"""

import contextlib

import keras
from keras import ops

from kerasdistill import _keras_internals


class _TensorFlow:
    """`tensorflow`, imported on first use: only the TensorFlow backend has
    `tf.distribute` strategies, and `import kerasdistill` must not load
    TensorFlow under JAX or PyTorch."""

    def __getattr__(self, name):
        import tensorflow

        return getattr(tensorflow, name)


tf = _TensorFlow()


def _on_tensorflow():
    return keras.backend.backend() == "tensorflow"


def strategy_of(model):
    """The `tf.distribute` strategy `model` was created under, or `None`
    (created outside any scope, or another backend than TensorFlow).

    Example:

    ```python
    kerasdistill.distribute.strategy_of(distiller)  # None on one device
    ```
    """
    return _keras_internals.created_strategy(model) if _on_tensorflow() else None


def check_scope(teachers, student, distillation_losses):
    """Raises a `ValueError` naming the fix when the teachers (a list), the
    student, the losses and the `Distiller` being created are not in the
    same `strategy.scope()`.

    Call it while the `Distiller` is constructed: the current strategy is the
    one the `Distiller` will train with.

    Example:

    ```python
    with strategy.scope():
        kerasdistill.distribute.check_scope(
            [teacher], student, [kerasdistill.LogitsDistillation()]
        )
    ```
    """
    if not _on_tensorflow():
        return
    strategy = tf.distribute.get_strategy() if tf.distribute.has_strategy() else None
    variables = [("student", v, True) for v in student.variables]
    variables += [("teacher", v, False) for t in teachers for v in t.variables]
    for loss in distillation_losses:  # a learned adapter trains like the student
        for v in getattr(loss, "variables", []):
            variables.append((f"distillation loss '{loss.name}'", v, v.trainable))
    for role, variable, must_be_inside in variables:
        owner = _keras_internals.variable_strategy(variable)
        if owner is strategy or (owner is None and not must_be_inside):
            continue
        if strategy is None:
            raise ValueError(
                f"Expected the Distiller to be created inside the "
                f"`strategy.scope()` of its {role} ({_describe(owner)}). "
                "Received a Distiller created outside any scope: fit() would "
                "train on one device. Create the Distiller (and compile it) "
                f"inside the same `with strategy.scope():` block as the "
                f"{role}."
            )
        if owner is None:
            raise ValueError(
                f"Expected the {role} to be created inside the "
                f"`strategy.scope()` of the Distiller ({_describe(strategy)}). "
                f"Received a {role} whose variable '{variable.path}' was "
                "created outside it, so the replicas could not share its "
                f"updates. Build (or load) the {role} inside the `with "
                "strategy.scope():` block that creates the Distiller."
            )
        raise ValueError(
            f"Expected the {role} and the Distiller to be created in the "
            f"same `strategy.scope()`. Received a {role} created under "
            f"{_describe(owner)} and a Distiller created under "
            f"{_describe(strategy)}. Create the teacher, the student and "
            "the Distiller inside one `with strategy.scope():` block."
        )


def check_compile(strategy, compile_kwargs):
    """Raises a `ValueError` when `compile()` is called in another strategy's
    scope than the Distiller's, or asks for an option that TensorFlow cannot
    run on several replicas of a `MirroredStrategy` or
    `MultiWorkerMirroredStrategy`.

    Args:
        strategy: The strategy the Distiller was created in, or `None`.
        compile_kwargs: The keyword arguments given to `compile()`.

    Example:

    ```python
    kerasdistill.distribute.check_compile(
        distiller.distribute_strategy, {"steps_per_execution": 1}
    )
    ```
    """
    if not _on_tensorflow():
        return
    if tf.distribute.has_strategy() and tf.distribute.get_strategy() is not strategy:
        where = (
            "outside any scope" if strategy is None else f"under {_describe(strategy)}"
        )
        raise ValueError(
            "Expected compile() to be called in the `strategy.scope()` the "
            "Distiller was created in, or outside any scope. Received "
            f"compile() inside the scope of {_describe(tf.distribute.get_strategy())} "
            f"for a Distiller created {where}. Create the teacher, the "
            "student and the Distiller inside the `with strategy.scope():` "
            "block, then compile."
        )
    strategy = strategy or tf.distribute.get_strategy()
    if strategy.num_replicas_in_sync < 2 or not isinstance(
        strategy,
        (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy),
    ):
        return
    versions = f"TensorFlow {tf.__version__} / Keras {keras.__version__}"
    failure = _jit_failure(strategy)
    if compile_kwargs.get("jit_compile") is True and failure:
        raise ValueError(
            f"Expected jit_compile to be False or 'auto' under "
            f"{_describe(strategy)}. Received: jit_compile=True, which "
            f"{versions} cannot run on several replicas (XLA fails with "
            f"{failure}). Leave jit_compile at its default 'auto' (it turns "
            "XLA off under a strategy), or train on one device to use XLA."
        )
    steps = compile_kwargs.get("steps_per_execution", 1)
    if isinstance(steps, int) and steps > 1:
        raise ValueError(
            f"Expected steps_per_execution=1 under {_describe(strategy)}. "
            f"Received: steps_per_execution={steps}, which {versions} cannot "
            "run on several replicas (its multi-step loop fails with 'You "
            "must feed a value for placeholder tensor'). Use "
            "steps_per_execution=1 (the default), or train on one device."
        )


def scope(strategy):
    """`strategy.scope()`, or a null context when `strategy` is `None`.

    Example:

    ```python
    with kerasdistill.distribute.scope(distiller.distribute_strategy):
        optimizer = keras.optimizers.get("adam")
    ```
    """
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def check_optimizer(strategy, optimizer):
    """Raises a `ValueError` naming the fix when `optimizer` was created in
    another `strategy.scope()` than the Distiller's (or in one when the
    Distiller was created outside any).

    Example:

    ```python
    kerasdistill.distribute.check_optimizer(
        distiller.distribute_strategy, keras.optimizers.Adam()
    )
    ```
    """
    for variable in optimizer.variables:
        owner = _keras_internals.variable_strategy(variable)
        if owner is strategy:
            continue
        where = "outside any scope" if owner is None else f"under {_describe(owner)}"
        distiller = (
            "outside any scope" if strategy is None else f"under {_describe(strategy)}"
        )
        raise ValueError(
            "Expected the optimizer to be created in the `strategy.scope()` "
            f"of the Distiller. Received an optimizer created {where} for a "
            f"Distiller created {distiller}. Pass the optimizer's name to "
            'compile() (e.g. optimizer="adam"), or create the optimizer '
            "inside the `with strategy.scope():` block."
        )


def _jit_failure(strategy):
    """How XLA fails on several replicas of `strategy`, or `None` where it
    is not known to fail (multi-worker on GPUs was not observed)."""
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return "'Trying to access resource ... located in device ...'"
    device_types = {
        tf.DeviceSpec.from_string(d).device_type
        for d in strategy.extended.worker_devices
    }
    if device_types == {"CPU"}:
        return (
            "'Collectives are not yet implemented for CPU devices when "
            "compiling with XLA'"
        )
    return None


def is_multi_worker(strategy):
    """Whether `strategy` is a `MultiWorkerMirroredStrategy` spanning
    several workers (the case Keras 3 `fit()` mishandles).

    Example:

    ```python
    kerasdistill.distribute.is_multi_worker(distiller.distribute_strategy)
    ```
    """
    return strategy is not None and _keras_internals.spans_several_workers(strategy)


def step_logs(strategy, logs):
    """The logs of one step, shaped so that Keras can reduce them.

    Under a multi-worker strategy Keras 3 averages each log over the
    workers along axis 0, which a scalar lacks ("Invalid reduction dimension
    0 for input with 0 dimensions", tensorflow/tensorflow#72388); a shape
    `(1,)` averages to the scalar. Elsewhere the logs are returned as they
    are.

    Args:
        strategy: The Distiller's strategy.
        logs: The dict of scalar logs a train or test step returns.

    Returns:
        The logs to return from the step.

    Example:

    ```python
    return kerasdistill.distribute.step_logs(self.distribute_strategy, logs)
    ```
    """
    if not _on_tensorflow() or not is_multi_worker(strategy):
        return logs
    return {key: ops.reshape(value, (1,)) for key, value in logs.items()}


def _describe(strategy):
    name = type(strategy).__name__
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        name = "MultiWorkerMirroredStrategy"  # the class is CollectiveAllReduceStrategy
    return f"{name} with {strategy.num_replicas_in_sync} replica(s)"
