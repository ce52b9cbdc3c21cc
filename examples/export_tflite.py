"""Distill a small digits classifier, then export its student to TFLite as
float32, float16, dynamic-range and full-integer int8 files, printing the
size, the parity with the Keras student and the test accuracy of each.

Run: python examples/export_tflite.py [--epochs 30] [--output DIR]
"""

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import kerasdistill  # noqa: E402


def mlp(widths, name):
    inputs = keras.Input((64,), name="pixels")
    x = inputs
    for i, width in enumerate(widths):
        x = keras.layers.Dense(width, activation="relu", name=f"{name}_{i}")(x)
    return keras.Model(
        inputs, keras.layers.Dense(10, name=f"{name}_logits")(x), name=name
    )


def tflite_accuracy(path, x, y):
    """Runs the .tflite file over the test set with the LiteRT interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=path).get_signature_runner()
    ((name, details),) = runner.get_input_details().items()
    if details["dtype"] == np.int8:
        scale, zero_point = details["quantization"]
        x = np.clip(np.round(x / scale + zero_point), -128, 127).astype(np.int8)
    (logits,) = runner(**{name: x}).values()
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument(
        "--output", default=None, help="directory for the .tflite files (default: temp)"
    )
    args = parser.parse_args()
    keras.utils.set_random_seed(0)

    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.3, random_state=0, stratify=digits.target
    )
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    teacher = mlp([256, 256], "teacher")
    teacher.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    teacher.fit(x_train, y_train, epochs=args.epochs, batch_size=64, verbose=0)
    distiller = kerasdistill.Distiller(
        teacher,
        mlp([32], "student"),
        kerasdistill.LogitsDistillation(temperature=4.0),
        student_loss_weight=0.3,
    )
    distiller.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    distiller.fit(x_train, y_train, epochs=args.epochs, batch_size=64, verbose=0)
    _, teacher_accuracy = teacher.evaluate(x_test, y_test, verbose=0)
    student_accuracy = distiller.evaluate(x_test, y_test, verbose=0, return_dict=True)[
        "accuracy"
    ]
    print(
        f"teacher: {teacher.count_params()} parameters, "
        f"test accuracy {teacher_accuracy:.4f}"
    )
    print(
        f"student: {distiller.student.count_params()} parameters, "
        f"test accuracy {student_accuracy:.4f} (Keras)"
    )

    output = args.output or tempfile.mkdtemp(prefix="kerasdistill-tflite-")
    exports = [
        ("float32", {}),
        ("float16", {"quantization": "float16"}),
        ("dynamic", {"quantization": "dynamic"}),
        ("int8", {"quantization": "int8", "representative_data": x_train[:300]}),
        (
            "int8, int8 input/output",
            {
                "quantization": "int8",
                "representative_data": x_train[:300],
                "input_type": "int8",
                "output_type": "int8",
            },
        ),
    ]
    print(
        f"\n{'export':<25} {'bytes':>7} {'max |diff|':>11} {'relative':>9} "
        f"{'top-1 agree':>11} {'test acc':>9}"
    )
    for i, (label, kwargs) in enumerate(exports):
        path = os.path.join(output, f"student_{i}.tflite")
        report = kerasdistill.export_student(
            distiller,
            path,
            format="tflite",
            sample_inputs=x_test,
            overwrite=True,
            **kwargs,
        )
        accuracy = tflite_accuracy(path, x_test, y_test)
        print(
            f"{label:<25} {report.bytes:>7} {report.max_abs_diff:>11.4g} "
            f"{report.relative_diff:>9.2%} {report.top1_agreement:>11.2%} "
            f"{accuracy:>9.4f}"
        )
    print(f"\nfiles in {output}")


if __name__ == "__main__":
    main()
