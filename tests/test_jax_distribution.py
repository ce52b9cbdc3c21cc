"""Scale-out under JAX with Keras's own `keras.distribution.DataParallel`:
a `Distiller` trained on 2 (host) devices gives the losses and the final
weights of the same training on one device.

JAX fixes its device count when it is imported, and
`XLA_FLAGS=--xla_force_host_platform_device_count=2` must be set before
that, so the training runs in a subprocess (with `KERAS_BACKEND=jax`), which
prints its results as JSON; the comparison is made here.
"""

import textwrap

import numpy as np
import pytest
from conftest import BACKEND
from conftest import run_on_host_devices

pytestmark = pytest.mark.skipif(
    BACKEND != "jax",
    reason=f"keras.distribution runs on JAX; KERAS_BACKEND={BACKEND}",
)

TIMEOUT_S = 300

# Trains the same Distiller (logits + a tapped FitNets hint through an
# adapter, sample weights, Adam) twice from the same initial weights: on one
# device, then under DataParallel over both host devices.
BODY = textwrap.dedent(
    """
    import json

    import jax
    import keras
    import numpy as np

    import kerasdistill as kd

    assert keras.backend.backend() == "jax", keras.backend.backend()
    devices = keras.distribution.list_devices()
    assert len(devices) == 2, devices

    def mlp(width, name):
        inputs = keras.Input((6,), name=f"{name}_input")
        hidden = keras.layers.Dense(width, activation="relu", name=f"{name}_hidden")(
            inputs
        )
        outputs = keras.layers.Dense(3, name=f"{name}_logits")(hidden)
        return keras.Model(inputs, outputs, name=name)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = np.argmax(x[:, :3], axis=1).astype("int32")
    sample_weight = np.linspace(0.2, 1.0, 64).astype("float32")

    def train(initial):
        keras.utils.set_random_seed(0)
        teacher, student = mlp(16, "teacher"), mlp(8, "student")
        losses = [
            kd.LogitsDistillation(temperature=2.0),
            kd.FeatureDistillation("mse", "teacher_hidden", "student_hidden"),
        ]
        distiller = kd.Distiller(
            teacher, student, losses, distillation_loss_weights=[1.0, 0.5],
            student_loss_weight=0.3,
        )
        distiller.compile(
            keras.optimizers.Adam(0.01),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        distiller.build((None, 6))
        if initial is None:
            initial = [w.numpy().tolist() for w in distiller.weights]
        else:
            for variable, value in zip(distiller.weights, initial):
                variable.assign(np.asarray(value, dtype=variable.dtype))
        history = distiller.fit(
            x, y, sample_weight=sample_weight, batch_size=16, epochs=3,
            shuffle=False, verbose=0,
        ).history
        shardings = sorted(
            {len(w.value.sharding.device_set) for w in student.weights}
        )
        return initial, {
            "loss": history["loss"],
            "distillation_loss": history["distillation_loss"],
            "weights": [w.tolist() for w in student.get_weights()],
            "devices_per_weight": shardings,
        }

    initial, one = train(None)
    distribution = keras.distribution.DataParallel(devices=devices)
    with distribution.scope():
        _, two = train(initial)
    # How Keras lays each batch out: split along the batch axis over both.
    two["data_axes"] = list(distribution.get_data_layout([16, 6]).axes)
    mesh = distribution.device_mesh
    two["mesh"] = {a: int(n) for a, n in zip(mesh.axis_names, mesh.shape)}
    print("RESULT " + json.dumps({"one": one, "two": two}))
    """
)


@pytest.fixture(scope="module")
def runs():
    return run_on_host_devices(BODY, 2, TIMEOUT_S)


def test_data_parallel_on_two_devices_matches_one_device(runs):
    one, two = runs["one"], runs["two"]
    # One device: each weight on one device; DataParallel: replicated on both.
    assert one["devices_per_weight"] == [1]
    assert two["devices_per_weight"] == [2]
    assert two["mesh"] == {"batch": 2} and two["data_axes"] == ["batch", None]
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5)
    np.testing.assert_allclose(
        two["distillation_loss"], one["distillation_loss"], rtol=1e-5
    )
    assert one["loss"][-1] < one["loss"][0]  # it trained
    for a, b in zip(two["weights"], one["weights"]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
