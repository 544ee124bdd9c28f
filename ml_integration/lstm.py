"""The LSTM magnitude model: trained with Keras, served by a numpy forward pass.

Why two halves: importing TensorFlow costs about 440 MB of RSS and 4-5 s per gunicorn worker
on the reference machine, and ``model.predict`` on one row costs tens of milliseconds. A
two-layer LSTM is a few matrix products per time step, so serving runs the exported weights
in numpy (:class:`NumpyLSTM`, float64) and never imports TensorFlow. ``train_lstm`` imports
Keras lazily, inside the function; nothing else in the serving path does.

Network (the customary defaults): input (24 bars × n features) → LSTM(50, sequences) →
Dropout(0.2) → LSTM(30) → Dropout(0.2) → Dense(1), trained with MSE on the forward log return
divided by its training standard deviation. Inputs are standardised with the mean/std of the
training rows only. Keras' LSTM gate order is i, f, c (candidate), o; activations tanh and
sigmoid; the numpy pass reproduces exactly that (see ``tests/ml_integration/test_lstm.py``:
max abs difference ≤ 1e-5 against TensorFlow on real feature sequences).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "TRAIN_EXTRA_HINT",
    "LSTMConfig",
    "NumpyLSTM",
    "build_sequences",
    "require_keras",
    "sequence_ready",
    "train_lstm",
]

#: What to do when TensorFlow is missing (one line: it is printed as is).
TRAIN_EXTRA_HINT = (
    "training the LSTM needs TensorFlow (the 'train' extra, about 1.3 GB, not in a serve-only install): "
    "pip install 'tvgw[train]' (-e '.[train]' in a checkout), or train without the LSTM: --no-lstm"
)


@dataclass(frozen=True)
class LSTMConfig:
    """Hyperparameters; the defaults are the customary ones for this model."""

    sequence_length: int = 24
    units: tuple[int, ...] = (50, 30)
    dropout: float = 0.2
    epochs: int = 12
    batch_size: int = 128
    patience: int = 3
    learning_rate: float = 2e-3
    seed: int = 0


def sequence_ready(valid_rows: np.ndarray, sequence_length: int) -> np.ndarray:
    """True at row t when rows t - sequence_length + 1 .. t all have valid features."""
    valid = valid_rows.astype(np.int64)
    out = np.zeros(len(valid), dtype=bool)
    if len(valid) >= sequence_length:
        window_sums = np.convolve(valid, np.ones(sequence_length, dtype=np.int64), mode="valid")
        out[sequence_length - 1 :] = window_sums == sequence_length
    return out


def build_sequences(matrix: np.ndarray, rows: np.ndarray, sequence_length: int) -> np.ndarray:
    """(len(rows), sequence_length, n_features): the feature rows ending at each row in ``rows``."""
    offsets = np.arange(-sequence_length + 1, 1)
    return matrix[rows[:, None] + offsets[None, :]]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * z) + 1.0)  # overflow-free form of 1 / (1 + e^-z)


@dataclass(frozen=True)
class NumpyLSTM:
    """Exported weights and the scaling around them; ``predict`` returns forward log returns."""

    layers: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
    dense_kernel: np.ndarray
    dense_bias: np.ndarray
    x_mean: np.ndarray
    x_scale: np.ndarray
    y_scale: float
    sequence_length: int
    history: dict[str, list[float]] = field(default_factory=dict)

    def predict_scaled(self, sequences: np.ndarray) -> np.ndarray:
        """The network's raw output for already-standardised sequences (n, T, F)."""
        h_seq = np.asarray(sequences, dtype=np.float64)
        for kernel, recurrent, bias in self.layers:
            units = recurrent.shape[0]
            n, steps = h_seq.shape[0], h_seq.shape[1]
            projected = h_seq @ kernel + bias  # input contribution of every step at once
            h = np.zeros((n, units))
            c = np.zeros((n, units))
            outputs = np.empty((n, steps, units))
            for t in range(steps):
                z = projected[:, t] + h @ recurrent
                gates = _sigmoid(z)  # i, f and o are sigmoid gates; c's slice is replaced by tanh below
                g = np.tanh(z[:, 2 * units : 3 * units])
                i, f, o = gates[:, :units], gates[:, units : 2 * units], gates[:, 3 * units :]
                c = f * c + i * g
                h = o * np.tanh(c)
                outputs[:, t] = h
            h_seq = outputs
        return (h_seq[:, -1] @ self.dense_kernel + self.dense_bias)[:, 0]

    def standardise(self, sequences: np.ndarray) -> np.ndarray:
        return (sequences - self.x_mean) / self.x_scale

    def predict(self, sequences: np.ndarray) -> np.ndarray:
        """Forward log return predicted for each raw-feature sequence (n, T, F)."""
        return self.predict_scaled(self.standardise(sequences)) * self.y_scale

    def save(self, path: str | Path) -> None:
        arrays: dict[str, Any] = {
            "dense_kernel": self.dense_kernel,
            "dense_bias": self.dense_bias,
            "x_mean": self.x_mean,
            "x_scale": self.x_scale,
            "y_scale": np.array(self.y_scale),
            "sequence_length": np.array(self.sequence_length),
            "n_layers": np.array(len(self.layers)),
        }
        for k, (kernel, recurrent, bias) in enumerate(self.layers):
            arrays[f"kernel_{k}"], arrays[f"recurrent_{k}"], arrays[f"bias_{k}"] = kernel, recurrent, bias
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> NumpyLSTM:
        with np.load(path, allow_pickle=False) as data:
            a: dict[str, Any] = {key: data[key] for key in data.files}
        layers = [(a[f"kernel_{k}"], a[f"recurrent_{k}"], a[f"bias_{k}"]) for k in range(int(a["n_layers"]))]
        return cls(
            layers=layers,
            dense_kernel=a["dense_kernel"],
            dense_bias=a["dense_bias"],
            x_mean=a["x_mean"],
            x_scale=a["x_scale"],
            y_scale=float(a["y_scale"]),
            sequence_length=int(a["sequence_length"]),
        )


def build_keras_model(n_features: int, config: LSTMConfig) -> Any:
    """The Keras network (imports Keras: training and tests only)."""
    keras = require_keras()

    keras.utils.set_random_seed(config.seed)
    layers: list[Any] = [keras.Input(shape=(config.sequence_length, n_features))]
    for k, units in enumerate(config.units):
        layers.append(keras.layers.LSTM(units, return_sequences=k < len(config.units) - 1))
        layers.append(keras.layers.Dropout(config.dropout))
    layers.append(keras.layers.Dense(1))
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss="mse")
    return model


def export_keras_model(model: Any, x_mean: np.ndarray, x_scale: np.ndarray, y_scale: float) -> NumpyLSTM:
    """Copy a trained Keras model's weights into a :class:`NumpyLSTM`."""
    import keras

    lstm_layers = [layer for layer in model.layers if isinstance(layer, keras.layers.LSTM)]
    dense = next(layer for layer in model.layers if isinstance(layer, keras.layers.Dense))
    layers = []
    for layer in lstm_layers:
        kernel, recurrent, bias = (np.asarray(w, dtype=np.float64) for w in layer.get_weights())
        layers.append((kernel, recurrent, bias))
    dense_kernel, dense_bias = (np.asarray(w, dtype=np.float64) for w in dense.get_weights())
    return NumpyLSTM(
        layers=layers,
        dense_kernel=dense_kernel,
        dense_bias=dense_bias,
        x_mean=x_mean,
        x_scale=x_scale,
        y_scale=y_scale,
        sequence_length=int(model.input_shape[1]),
    )


def require_keras() -> Any:
    """Keras (with TensorFlow), or :class:`MissingTrainExtraError` saying how to get it.

    Checked before a training run starts, so a serve-only install learns it in one line at
    once rather than from a traceback after the other models have trained."""
    from ml_integration.exceptions import MissingTrainExtraError

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter off stderr
    try:
        import keras
    except ImportError as exc:
        raise MissingTrainExtraError(TRAIN_EXTRA_HINT) from exc
    return keras


def train_lstm(
    train_seq: np.ndarray,
    train_y: np.ndarray,
    val_seq: np.ndarray,
    val_y: np.ndarray,
    config: LSTMConfig | None = None,
) -> tuple[NumpyLSTM, Any]:
    """Fit the network on training sequences (early stopping on the validation part, which
    must come later in time than the training rows) and export it.

    Scaling is fit on the training sequences only. Returns the numpy model and the Keras model
    (the latter for tests comparing the two; callers normally drop it).
    """
    config = config or LSTMConfig()
    n_features = train_seq.shape[2]
    flat = train_seq.reshape(-1, n_features)
    x_mean = flat.mean(axis=0)
    x_scale = flat.std(axis=0)
    x_scale[x_scale == 0] = 1.0
    y_scale = float(np.std(train_y)) or 1.0
    keras = require_keras()

    model = build_keras_model(n_features, config)
    scaled_train = ((train_seq - x_mean) / x_scale).astype(np.float32)
    scaled_val = ((val_seq - x_mean) / x_scale).astype(np.float32)
    stop = keras.callbacks.EarlyStopping(patience=config.patience, restore_best_weights=True)
    fit = model.fit(
        scaled_train,
        (train_y / y_scale).astype(np.float32),
        validation_data=(scaled_val, (val_y / y_scale).astype(np.float32)),
        epochs=config.epochs,
        batch_size=config.batch_size,
        callbacks=[stop],
        shuffle=True,
        verbose=0,
    )
    exported = export_keras_model(model, x_mean, x_scale, y_scale)
    history = {k: [float(v) for v in values] for k, values in fit.history.items()}
    return NumpyLSTM(**{**exported.__dict__, "history": history}), model
