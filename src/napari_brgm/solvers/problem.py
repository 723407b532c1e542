"""The inverse problem a solver sees: a frozen generator, a forward operator and a measurement."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from napari_brgm.operators.base import LinearOperator


@dataclass
class Problem:
    """y = A·G(w) + noise, everything in the generator's units ([-1, 1]) and on one device."""

    generator: torch.nn.Module | None  # napari_brgm.priors.Generator, eval mode, frozen; None for DIP
    operator: LinearOperator  # A, acting on [N, C, R, R]
    y: torch.Tensor  # measurement [1, C, h, w]; [B, C, h, w] for B independent problems (solve_map only)
    _observed: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        assert self.y.ndim == 4, f"y must be [B, C, h, w], got {tuple(self.y.shape)}"

    @property
    def device(self) -> torch.device:
        return self.y.device

    def residual(self, images: torch.Tensor) -> torch.Tensor:
        """A·x − y for a batch of images [N, C, R, R]."""
        return self.operator.forward(images) - self.y

    def observed_count(self, images: torch.Tensor) -> torch.Tensor:
        """How many measurement entries are observed (`LinearOperator.observed_count`) for images shaped like `images`.

        Fixed by the operator: counted once per problem, not at every step.
        """
        if self._observed is None:
            self._observed = torch.tensor(max(1, self.operator.observed_count(images)), device=images.device)
        return self._observed

    def data_fit(self, images: torch.Tensor) -> torch.Tensor:
        """Mean of (A·x − y)² over the OBSERVED measurement entries, one value per image [N].

        Missing entries are zero in both A·x and y, so they are left out of the count: the value is
        comparable with σ_y² (the discrepancy principle the early stopping uses).
        """
        return self.residual(images).square().flatten(1).sum(1) / self.observed_count(images)
