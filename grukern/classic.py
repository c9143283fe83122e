"""The classic Keras GRU example, on data that ships with statsmodels, for grukern and its peers.

    inputs = Input(shape=(None, 1))
    gru = GRU(32, return_sequences=True)(inputs)
    outputs = Dense(1, activation='sigmoid')(gru)
    model.compile(optimizer='adam', loss='binary_crossentropy', metrics=['accuracy'])

Data: the weekly Mauna Loa CO2 series (statsmodels.datasets.co2, 1958-2001, gaps filled by
linear interpolation). The network reads the weekly change (standardised) and, at every step,
predicts whether the next value rises. Windows of `window` weeks start every `stride` weeks.
statsmodels, keras and torch are imported only here, inside the
functions that need them (they come with the `test` and `notebooks` extras). Keras 3 runs on
its torch backend: these functions set KERAS_BACKEND=torch unless it is set, which only takes
effect before keras is first imported.
"""

from __future__ import annotations

import os

import numpy as np


def co2_rising(window: int = 64, stride: int = 8, dtype=np.float64):
    """x (N, window, 1): standardised weekly changes d_t = c_(t+1) − c_t of the CO2 level c;
    targets (N, window, 1): 1.0 where the next value rises (d_(t+1) > 0), else 0.0."""
    import statsmodels.api as sm

    level = sm.datasets.co2.load_pandas().data["co2"].interpolate().to_numpy()
    change = np.diff(level)
    standardised = (change - change.mean()) / change.std()
    starts = range(0, len(change) - window, stride)  # each window needs one change after it
    x = np.stack([standardised[s : s + window] for s in starts])
    rises = np.stack([change[s + 1 : s + window + 1] > 0 for s in starts])
    return x[..., None].astype(dtype), rises[..., None].astype(dtype)


def keras_model(hidden_size: int = 32, *, dtype=np.float64, seed: int = 0):
    """The classic model, compiled with Adam and binary cross-entropy (KERAS_BACKEND=torch)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    keras.utils.set_random_seed(seed)
    dtype = np.dtype(dtype).name
    inputs = keras.Input(shape=(None, 1), dtype=dtype)
    gru = keras.layers.GRU(hidden_size, return_sequences=True, dtype=dtype)(inputs)
    outputs = keras.layers.Dense(1, activation="sigmoid", dtype=dtype)(gru)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(), loss="binary_crossentropy", metrics=["accuracy"]
    )
    return model


def torch_trainer(classifier, *, dtype=np.float32):
    """A plain torch training loop for the same model and weights: nn.GRU -> nn.Linear,
    BCEWithLogitsLoss, torch.optim.Adam (eps=1e-7). Returns fit(x, targets, batch_size) that
    runs one epoch and returns its sample-averaged loss."""
    import torch

    torch_dtype = torch.float64 if np.dtype(dtype) == np.float64 else torch.float32
    params = classifier.gru.params[0].astype(dtype)
    gru = torch.nn.GRU(params.input_size, params.hidden_size, batch_first=True, dtype=torch_dtype)
    gru.load_state_dict(params.to_torch_state_dict())
    head = torch.nn.Linear(params.hidden_size, classifier.dense.kernel.shape[1], dtype=torch_dtype)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(classifier.dense.kernel.T.astype(dtype)))
        head.bias.copy_(torch.from_numpy(classifier.dense.bias.astype(dtype)))
    optimizer = torch.optim.Adam([*gru.parameters(), *head.parameters()], eps=1e-7)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def fit_epoch(x, targets, batch_size):
        total = 0.0
        for start in range(0, len(x), batch_size):
            x_b = torch.from_numpy(x[start : start + batch_size])
            t_b = torch.from_numpy(targets[start : start + batch_size])
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(head(gru(x_b)[0]), t_b)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(x_b)
        return total / len(x)

    return fit_epoch
