"""A sharded teacher and student under JAX: `keras.distribution.ModelParallel`
over 8 host devices, with keras-hub's own layout map of the Gemma backbone,
gives the loss and the updated weights of the same `kd.Distiller` training
step on one device.

JAX fixes its device count when it is imported, and
`XLA_FLAGS=--xla_force_host_platform_device_count=8` must be set before
that, so both steps run in a subprocess (with `KERAS_BACKEND=jax`), which
prints its results as JSON; the comparison is made here.
"""

import textwrap

import numpy as np
import pytest
from conftest import BACKEND
from conftest import run_on_host_devices

pytestmark = [
    pytest.mark.skipif(
        BACKEND != "jax",
        reason=f"keras.distribution.ModelParallel runs on JAX; KERAS_BACKEND={BACKEND}",
    ),
    pytest.mark.slow,  # compiles two distillers of keras-hub models (~1 minute)
]

TIMEOUT_S = 600

# One training step of token KD (forward KL on the padding-masked logits,
# plus the student's own loss on the next tokens) between two keras-hub
# Gemma causal LMs: on one device, then under ModelParallel on a
# (batch 2, model 4) mesh, each network laid out by GemmaBackbone's own
# layout map, from the same initial weights. SGD, so that the update is the
# gradient (Adam's first step divides each gradient by its own magnitude,
# which turns float32 round-off on a near-zero gradient into a full step).
BODY = textwrap.dedent(
    """
    import json

    import keras
    import keras_hub
    import numpy as np

    import kerasdistill as kd

    assert keras.backend.backend() == "jax", keras.backend.backend()
    devices = keras.distribution.list_devices()
    assert len(devices) == 8, devices

    def gemma(width, name):
        backbone = keras_hub.models.GemmaBackbone(
            vocabulary_size=64, num_layers=2, num_query_heads=4,
            num_key_value_heads=4, hidden_dim=width, intermediate_dim=2 * width,
            head_dim=4, name=f"{name}_backbone",
        )
        return keras_hub.models.GemmaCausalLM(
            backbone=backbone, preprocessor=None, name=name
        )

    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 64, (4, 9)).astype("int32")
    mask = (np.arange(9)[None] < np.array([[9], [7], [5], [8]])).astype("int32")
    x = {"token_ids": tokens[:, :-1], "padding_mask": mask[:, :-1]}
    y, sample_weight = tokens[:, 1:], mask[:, 1:].astype("float32")

    def step(initial):
        keras.utils.set_random_seed(0)
        teacher, student = gemma(16, "teacher"), gemma(8, "student")
        if initial is None:
            initial = [[w.tolist() for w in m.get_weights()] for m in (teacher, student)]
        for model, weights in zip((teacher, student), initial):
            model.set_weights([np.asarray(w, "float32") for w in weights])
        distiller = kd.Distiller(
            teacher, student,
            kd.LogitsDistillation(2.0, mask="padding_mask"),
            student_loss_weight=0.5,
        )
        distiller.compile(
            keras.optimizers.SGD(0.5),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        history = distiller.fit(
            x, y, sample_weight=sample_weight, batch_size=4, epochs=1,
            shuffle=False, verbose=0,
        ).history
        layouts = {
            f"{role}/{v.path}": str(tuple(getattr(v.value.sharding, "spec", ())))
            for role, model in (("teacher", teacher), ("student", student))
            for v in model.weights
            if v.path.endswith(("token_embedding/embeddings", "ffw_linear/kernel"))
        }
        return initial, {
            "loss": history["loss"],
            "distillation_loss": history["distillation_loss"],
            "weights": [w.tolist() for w in student.get_weights()],
            "teacher_unchanged": all(
                np.array_equal(a, np.asarray(b, "float32"))
                for a, b in zip(teacher.get_weights(), initial[0])
            ),
            "devices_per_weight": sorted(
                {len(w.value.sharding.device_set) for w in student.weights}
            ),
            "layouts": layouts,
        }

    initial, one = step(None)
    mesh = keras.distribution.DeviceMesh(
        shape=(2, 4), axis_names=("batch", "model"), devices=devices
    )
    layout_map = keras_hub.models.GemmaBackbone.get_layout_map(mesh)
    distribution = keras.distribution.ModelParallel(
        layout_map=layout_map, batch_dim_name="batch"
    )
    with distribution.scope():
        _, sharded = step(initial)
    print("RESULT " + json.dumps({"one": one, "sharded": sharded, "initial": initial[1]}))
    """
)


@pytest.fixture(scope="module")
def runs():
    return run_on_host_devices(BODY, 8, TIMEOUT_S)


def test_model_parallel_step_matches_one_device(runs):
    one, sharded = runs["one"], runs["sharded"]
    # One device: each weight on one device; ModelParallel: laid out over
    # the 8 devices by keras-hub's layout map, teacher and student alike.
    assert one["devices_per_weight"] == [1]
    assert sharded["devices_per_weight"] == [8]
    for role in ("teacher", "student"):
        assert sharded["layouts"][f"{role}/token_embedding/embeddings"] == str(
            ("model", "batch")
        )
        assert sharded["layouts"][f"{role}/decoder_block_1/ffw_linear/kernel"] == str(
            ("model", "batch")
        )
    np.testing.assert_allclose(sharded["loss"], one["loss"], rtol=1e-5)
    np.testing.assert_allclose(
        sharded["distillation_loss"], one["distillation_loss"], rtol=1e-5
    )
    assert one["teacher_unchanged"] and sharded["teacher_unchanged"]
    for a, b, start in zip(sharded["weights"], one["weights"], runs["initial"]):
        a, b, start = (np.asarray(w, "float64") for w in (a, b, start))
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        # The updates themselves (the gradients), not only the new weights.
        update = np.abs(b - start).max()
        np.testing.assert_allclose(a - start, b - start, atol=1e-4 * update)
    assert (
        max(
            np.abs(np.asarray(b) - np.asarray(s)).max()
            for b, s in zip(one["weights"], runs["initial"])
        )
        > 1e-3
    )  # the step moved the student
