"""Early stopping on validation loss with best-weights restore (the seed's Keras callback, in torch)."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch


class EarlyStopping:
    """Stop after ``patience`` epochs without a validation-loss improvement; keep the best weights.

    Example:
        >>> stopper = EarlyStopping(patience=4)
        >>> stopper.step(0.5, torch.nn.Linear(1, 1))
        False
    """

    def __init__(self, patience: int, *, min_delta: float = 0.0, best: float = math.inf) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.best = best
        self.best_epoch: int | None = None
        self.best_state: dict[str, Any] | None = None
        self.bad_epochs = 0
        self._epoch = 0

    def step(self, loss: float, module: torch.nn.Module) -> bool:
        """Record ``loss`` for this epoch; return True when training should stop."""
        self._epoch += 1
        if loss < self.best - self.min_delta:
            self.best = loss
            self.best_epoch = self._epoch
            self.best_state = copy.deepcopy(module.state_dict())
            self.bad_epochs = 0
            return False
        self.bad_epochs += 1
        return self.bad_epochs >= self.patience

    def restore(self, module: torch.nn.Module) -> bool:
        """Load the best weights seen into ``module``; False if no epoch improved on the starting best."""
        if self.best_state is None:
            return False
        module.load_state_dict(self.best_state)
        return True
