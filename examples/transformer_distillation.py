"""Distilling a small BERT into a 2-layer one with layer mapping (TinyBERT).

The task is made here: padded sequences of random tokens (lengths 6 to 16);
the label says whether the token `A` occurs more often than the token `B`
in the unpadded part (tokens at padded positions would change the counts). The teacher (keras-hub `BertTextClassifier`, 4
layers, width 64, built from a config, no downloaded weights) learns it
from the labels. Two students of the same architecture (2 layers, width 32)
and the same initial weights train for the same epochs on the same data:
one on the labels alone, one distilled with logits KD plus
`kerasdistill.layer_mapping`: TinyBERT's uniform map (student layer i
learns teacher layer 2i + 1) on the hidden states, through learned
adapters (32 -> 64), MiniLM's attention KL on the same pairs, padded
positions left out (keras-hub's `padding_mask` input).
Run: `python examples/transformer_distillation.py` (keras-hub needed:
`pip install 'kerasdistill[hub]'`).
"""

import keras
import keras_hub
import numpy as np

import kerasdistill as kd

SPARSE_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
VOCABULARY, LENGTH, A, B = 24, 16, 1, 2


def make_data(samples, seed):
    """Token ids (0 = padding), segment ids, padding mask; the label says
    whether `A` occurs more often than `B` in the unpadded tokens."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(3, VOCABULARY, (samples, LENGTH))
    counts = rng.integers(0, 4, (samples, 2))  # how many A and B to place
    for i in range(samples):
        positions = rng.choice(LENGTH, counts[i].sum(), replace=False)
        tokens[i, positions] = [A] * counts[i, 0] + [B] * counts[i, 1]
    lengths = rng.integers(6, LENGTH + 1, samples)
    mask = (np.arange(LENGTH)[None] < lengths[:, None]).astype("int32")
    tokens = (tokens * mask).astype("int32")
    labels = ((tokens == A).sum(1) > (tokens == B).sum(1)).astype("int32")
    x = {
        "token_ids": tokens,
        "segment_ids": np.zeros_like(tokens),
        "padding_mask": mask,
    }
    return x, labels


def bert(layers, hidden, heads, name):
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=VOCABULARY,
        num_layers=layers,
        num_heads=heads,
        hidden_dim=hidden,
        intermediate_dim=2 * hidden,
        max_sequence_length=LENGTH,
        dropout=0.0,
        name=f"{name}_backbone",
    )
    return keras_hub.models.BertTextClassifier(
        backbone, num_classes=2, preprocessor=None, dropout=0.0, name=name
    )


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))


def main(seed=0, epochs=5, samples=300, learning_rate=2e-3):
    keras.utils.set_random_seed(seed)
    x_train, y_train = make_data(samples, seed)
    x_test, y_test = make_data(1000, seed + 1)

    def adam():
        return keras.optimizers.Adam(learning_rate)

    teacher = bert(4, 64, 4, "teacher")
    teacher.compile(adam(), SPARSE_CE)
    teacher.fit(x_train, y_train, epochs=4 * epochs, batch_size=32, verbose=0)

    initial = bert(2, 32, 2, "student").get_weights()

    def student(name):
        model = bert(2, 32, 2, name)
        model.set_weights(initial)  # the same start for both students
        return model

    keras.utils.set_random_seed(seed)
    label_only = student("labels_only")
    label_only.compile(adam(), SPARSE_CE)
    label_only.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)

    keras.utils.set_random_seed(seed)
    distilled = student("distilled")
    mapping = kd.layer_mapping(teacher, distilled, strategy="uniform", attention="kl")
    distiller = kd.Distiller(
        teacher,
        distilled,
        [kd.LogitsDistillation(temperature=2.0), *mapping],
        distillation_loss_weights=[1.0] + [0.1] * len(mapping),
        student_loss_weight=0.5,
    )
    distiller.compile(adam(), SPARSE_CE)
    distiller.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)

    print("layer mapping (teacher -> student):")
    for loss in mapping:
        print(
            f"  {type(loss).__name__:<22}{loss.teacher_layer_name} -> {loss.student_layer_name}"
        )
    rows = [
        (f"teacher ({4 * epochs} epochs)", teacher),
        (f"student, labels only ({epochs} epochs)", label_only),
        (f"student, distilled ({epochs} epochs)", distilled),
    ]
    print(f"{'model':<40}{'params':>8}{'test accuracy':>15}")
    for name, model in rows:
        print(
            f"{name:<40}{model.count_params():>8,}{accuracy(model, x_test, y_test):>15.4f}"
        )


if __name__ == "__main__":
    main()
