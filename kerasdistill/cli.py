"""The `kerasdistill` command: `kerasdistill demo` (also
`python -m kerasdistill demo`)."""

import argparse
import os
import sys


def build_parser():
    parser = argparse.ArgumentParser(
        prog="kerasdistill", description="Knowledge distillation for Keras 3."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="distill a small MLP from a large one on scikit-learn's digits",
    )
    demo.add_argument("--epochs", type=int, default=60)
    demo.add_argument("--labeled-fraction", type=float, default=0.2)
    demo.add_argument("--temperature", type=float, default=4.0)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2))
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from kerasdistill import demo

    if not 0.0 < args.labeled_fraction <= 1.0:
        sys.exit(
            "Expected --labeled-fraction in (0, 1]. "
            f"Received: {args.labeled_fraction}"
        )
    results = demo.run_demo(
        epochs=args.epochs,
        labeled_fraction=args.labeled_fraction,
        temperature=args.temperature,
        seed=args.seed,
        verbose=args.verbose,
    )
    print()
    print(demo.format_table(results))
    return 0
