"""The configs of the models that wrap and train a student: the objects
they hold (models, losses, layers) serialized and deserialized, a model
without its own compile state (the wrapper's optimizer trains it)."""

import copy

import keras


def uncompiled_config(model):
    """`model`'s serialized config without its own compile state.

    Example:

    ```python
    copy = keras.saving.deserialize_keras_object(
        kerasdistill.model_configs.uncompiled_config(student)
    )
    ```
    """
    config = keras.saving.serialize_keras_object(model)
    config.pop("compile_config", None)
    return config


def serialized(value):
    """`value` serialized for a `get_config`: a model without its compile
    state, another Keras object as Keras serializes it, a list or dict of
    them item by item, `None` as `None`.

    Example:

    ```python
    kerasdistill.model_configs.serialized([teacher, None])
    ```
    """
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [serialized(item) for item in value]
    if isinstance(value, dict):
        return {key: serialized(item) for key, item in value.items()}
    if isinstance(value, keras.Model):
        return uncompiled_config(value)
    return keras.saving.serialize_keras_object(value)


def deserialized(config, keys):
    """A copy of `config` whose entries under `keys` are deserialized (each
    an object, a list or dict of them, or `None`): what a `from_config`
    passes to the constructor.

    Example:

    ```python
    kwargs = kerasdistill.model_configs.deserialized(config, ["student"])
    ```
    """
    config = copy.deepcopy(config)  # Keras's deserialization consumes it
    for key in keys:
        config[key] = _deserialized(config.get(key))
    return config


def _deserialized(value):
    if value is None:
        return None
    if isinstance(value, list):
        return [_deserialized(item) for item in value]
    if isinstance(value, dict) and "class_name" not in value:
        return {key: _deserialized(item) for key, item in value.items()}
    return keras.saving.deserialize_keras_object(value)
