"""The `kerasdistill` command: `kerasdistill demo`.

The command starts in `kerasdistill_cli`, which loads TensorFlow quietly
before this module; here the TFLite export's C++ lines are captured too,
and absl's Python logging shows errors only. The demo prints one progress
bar per model trained (`--verbose 1`, the default), then the report.
`python -m kerasdistill demo` runs the same command, after TensorFlow has
printed its load-time lines (the package imports it before `__main__`
runs).
"""

import argparse
import os
import sys

from absl import logging as absl_logging

import kerasdistill
import kerasdistill_cli
from kerasdistill import demo


def build_parser():
    parser = argparse.ArgumentParser(
        prog="kerasdistill", description="Knowledge distillation for Keras 3."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser(
        "demo",
        help="distill a small MLP from a large one on scikit-learn's digits "
        "(or from a CNN on a tensorflow-datasets image data set)",
    )
    demo_parser.add_argument(
        "--dataset",
        default=None,
        help="a TFDS image classification data set (mnist, cifar10, "
        "fashion_mnist, ...) instead of the bundled digits",
    )
    demo_parser.add_argument(
        "--data-dir",
        default=None,
        help="TFDS data folder (default: TFDS's, ~/tensorflow_datasets)",
    )
    demo_parser.add_argument(
        "--download",
        action="store_true",
        help="download the TFDS data set when it is not on disk",
    )
    demo_parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="student epochs (default: 60 on digits, 5 with --dataset)",
    )
    demo_parser.add_argument("--labeled-fraction", type=float, default=0.2)
    demo_parser.add_argument("--temperature", type=float, default=4.0)
    demo_parser.add_argument("--seed", type=int, default=0)
    demo_parser.add_argument(
        "--verbose",
        type=int,
        default=1,
        choices=(0, 1, 2),
        help="0: the report alone; 1 (default): one progress bar per model "
        "trained, then the report; 2: Keras's line per epoch",
    )
    demo_parser.add_argument(
        "--output",
        default="kerasdistill-demo",
        help="folder of the report (report.md and PNG figures)",
    )
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if not 0.0 < args.labeled_fraction <= 1.0:
        sys.exit(
            "Expected --labeled-fraction in (0, 1]. Received: "
            f"{args.labeled_fraction}. Pass a fraction such as 0.2."
        )
    if args.dataset is None and (args.data_dir or args.download):
        sys.exit(
            "--data-dir and --download apply to a TFDS data set: add --dataset NAME."
        )
    absl_logging.set_verbosity(absl_logging.ERROR)

    data = None if args.dataset is None else _tfds_data(args)
    if args.epochs is None:
        args.epochs = 60 if data is None else 5
    results = demo.run_demo(
        epochs=args.epochs,
        labeled_fraction=args.labeled_fraction if data is None else None,
        temperature=args.temperature,
        seed=args.seed,
        verbose=args.verbose,
        data=data,
    )
    figures = demo.write_report(results, args.output)
    print()
    print(demo.describe(results))
    print(kerasdistill.format_report(figures))
    with kerasdistill_cli.native_stderr_captured():  # the converter's C++ lines
        tflite = kerasdistill.export_student(
            results["student"],
            os.path.join(args.output, "student.tflite"),
            format="tflite",
            sample_inputs=results["data"]["x_test"],
            overwrite=True,
        )
    print(f"Student as TFLite: {tflite}")
    print(f"Report written to {figures['files']['markdown']}")
    return 0


def _tfds_data(args):
    """The demo's arrays from a TFDS data set; exits with the reason when
    it cannot be loaded (not on disk, unknown name, no tensorflow-datasets)."""
    from kerasdistill.data import tfds as tfds_data

    try:
        return tfds_data.labeled_split(
            args.dataset,
            args.labeled_fraction,
            seed=args.seed,
            data_dir=args.data_dir,
            download=args.download,
        )
    except (FileNotFoundError, ImportError, ValueError) as error:
        sys.exit(str(error))
