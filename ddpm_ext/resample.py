# Copyright 2026 The ddpm-ext authors. Apache-2.0.
"""Timestep samplers for training: uniform, and IDDPM's importance sampling by the loss's second moment (eq. 18).

A sampler draws t with probabilities p_t and returns the weights 1/(T p_t), so that the weighted loss
`(losses["loss"] * weights).mean()` is an unbiased estimate of the uniform-t objective.

In a multi-process (Accelerate) run, give every process the same loss history, so that all draw from the same
p_t: gather before updating,
`sampler.update_with_local_losses(accelerator.gather(timesteps), accelerator.gather(losses["loss"].detach()))`.
"""

from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
import torch

SAMPLER_NAMES = ("uniform", "importance")


def _check_num_timesteps(num_timesteps) -> int:
    if isinstance(num_timesteps, bool) or not isinstance(num_timesteps, (int, np.integer)) or num_timesteps < 1:
        raise ValueError(f"num_timesteps must be an integer >= 1, got {num_timesteps!r}")
    return int(num_timesteps)


class ScheduleSampler:
    """Base class: draws timesteps from `weights()` and returns their importance weights 1/(T p_t)."""

    num_timesteps: int

    def weights(self) -> np.ndarray:
        """The probabilities p_t of each timestep, a float64 array of length T summing to 1."""
        raise NotImplementedError

    def sample(
        self,
        batch_size: int,
        device: Union[str, torch.device, None] = None,
        generator: Optional[torch.Generator] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Draw one timestep per sample.

        Args:
            batch_size (`int`): number of timesteps to draw.
            device (`str` or `torch.device`, *optional*): where the returned tensors live (default CPU).
            generator (`torch.Generator`, *optional*): random source; draws happen on its device.

        Returns:
            `tuple`: (timesteps `torch.LongTensor` [B], weights `torch.FloatTensor` [B] equal to 1/(T p_t)).
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        draw_device = generator.device if generator is not None else torch.device(device or "cpu")
        p = torch.from_numpy(self.weights()).to(draw_device)
        timesteps = torch.multinomial(p, int(batch_size), replacement=True, generator=generator)
        weights = 1.0 / (self.num_timesteps * p[timesteps])
        return timesteps.to(device), weights.to(device=device, dtype=torch.float32)

    def update_with_local_losses(self, timesteps: torch.Tensor, losses: torch.Tensor) -> None:
        """Record per-sample losses at their timesteps (a no-op for samplers that do not adapt)."""

    def state_dict(self) -> Dict[str, Any]:
        """The sampler's state (for training checkpoints)."""
        return {"num_timesteps": self.num_timesteps}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restore the state from `state_dict()`."""
        if int(state_dict["num_timesteps"]) != self.num_timesteps:
            raise ValueError(
                f"the saved sampler state is for num_timesteps={int(state_dict['num_timesteps'])}, but this sampler"
                f" has num_timesteps={self.num_timesteps}"
            )


class UniformSampler(ScheduleSampler):
    """
    t ~ U{0, ..., T-1}; all weights are 1.

    Args:
        num_timesteps (`int`): T.
    """

    def __init__(self, num_timesteps: int):
        self.num_timesteps = _check_num_timesteps(num_timesteps)

    def weights(self) -> np.ndarray:
        return np.full(self.num_timesteps, 1.0 / self.num_timesteps)

    def sample(
        self,
        batch_size: int,
        device: Union[str, torch.device, None] = None,
        generator: Optional[torch.Generator] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        draw_device = generator.device if generator is not None else torch.device(device or "cpu")
        # the same draw as diffusers' training scripts: torch.randint(0, T, (B,))
        timesteps = torch.randint(0, self.num_timesteps, (int(batch_size),), generator=generator, device=draw_device)
        return timesteps.to(device), torch.ones(int(batch_size), device=device)


class LossSecondMomentResampler(ScheduleSampler):
    """
    Importance sampling of timesteps by the loss's second moment (IDDPM eq. 18): p_t ∝ √E[L_t²], estimated from
    the last `history_per_term` losses seen at each t. Until every t has that many, sampling is uniform. After
    warm-up, p is mixed with the uniform distribution, p_t = (1 - u) · √E[L_t²] / Σ_s √E[L_s²] + u / T with
    u = `uniform_prob`, so that every t keeps being visited (and its history refreshed), as IDDPM's code does.

    Args:
        num_timesteps (`int`): T.
        history_per_term (`int`, defaults to 10): losses kept per timestep.
        uniform_prob (`float`, defaults to 0.001): u, the weight of the uniform mixture, in [0, 1].
    """

    def __init__(self, num_timesteps: int, history_per_term: int = 10, uniform_prob: float = 0.001):
        self.num_timesteps = _check_num_timesteps(num_timesteps)
        if isinstance(history_per_term, bool) or not isinstance(history_per_term, (int, np.integer)) or (
            history_per_term < 1
        ):
            raise ValueError(f"history_per_term must be an integer >= 1, got {history_per_term!r}")
        if not 0.0 <= uniform_prob <= 1.0:
            raise ValueError(f"uniform_prob must lie in [0, 1], got {uniform_prob!r}")
        self.history_per_term = int(history_per_term)
        self.uniform_prob = float(uniform_prob)
        self._loss_history = np.zeros((self.num_timesteps, self.history_per_term), dtype=np.float64)
        self._loss_counts = np.zeros(self.num_timesteps, dtype=np.int64)

    def warmed_up(self) -> bool:
        """Whether every timestep has `history_per_term` recorded losses."""
        return bool((self._loss_counts >= self.history_per_term).all())

    def weights(self) -> np.ndarray:
        T = self.num_timesteps
        if not self.warmed_up():
            return np.full(T, 1.0 / T)
        # IDDPM eq. 18: p_t ∝ √E[L_t²]
        root_mean_square = np.sqrt(np.mean(self._loss_history**2, axis=1))
        total = root_mean_square.sum()
        if not total > 0:
            return np.full(T, 1.0 / T)
        return (1.0 - self.uniform_prob) * root_mean_square / total + self.uniform_prob / T

    def update_with_local_losses(self, timesteps: torch.Tensor, losses: torch.Tensor) -> None:
        """
        Record losses at their timesteps, keeping the newest `history_per_term` per timestep. In a multi-process
        run pass the tensors gathered from all processes (`accelerator.gather`), in the same order on every
        process, so that all processes keep the same history.

        Args:
            timesteps (`torch.Tensor`): [N] integer timesteps in [0, T).
            losses (`torch.Tensor`): [N] the per-sample losses at those timesteps (detached).
        """
        ts = torch.as_tensor(timesteps).detach().reshape(-1).cpu().numpy()
        values = torch.as_tensor(losses).detach().reshape(-1).double().cpu().numpy()
        if ts.shape != values.shape:
            raise ValueError(f"got {ts.shape[0]} timesteps but {values.shape[0]} losses; they must match one to one")
        if ts.size and (not np.issubdtype(ts.dtype, np.integer) or ts.min() < 0 or ts.max() >= self.num_timesteps):
            raise ValueError(f"timesteps must be integers in [0, {self.num_timesteps}), got {ts.tolist()[:8]}...")
        if not np.isfinite(values).all():
            raise ValueError(f"losses must be finite to update the importance sampler, got {values.tolist()[:8]}...")
        H = self.history_per_term
        for t, loss in zip(ts.tolist(), values.tolist()):
            self._loss_history[t, self._loss_counts[t] % H] = loss
            self._loss_counts[t] += 1

    def state_dict(self) -> Dict[str, Any]:
        """The loss history as tensors and plain numbers (safe for `torch.load(weights_only=True)`)."""
        return {
            "num_timesteps": self.num_timesteps,
            "history_per_term": self.history_per_term,
            "uniform_prob": self.uniform_prob,
            "loss_history": torch.from_numpy(self._loss_history.copy()),
            "loss_counts": torch.from_numpy(self._loss_counts.copy()),
        }

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if int(state_dict["history_per_term"]) != self.history_per_term:
            raise ValueError(
                f"the saved sampler state has history_per_term={int(state_dict['history_per_term'])}, but this"
                f" sampler has history_per_term={self.history_per_term}"
            )
        self.uniform_prob = float(state_dict["uniform_prob"])
        self._loss_history = torch.as_tensor(state_dict["loss_history"]).double().numpy().copy()
        self._loss_counts = torch.as_tensor(state_dict["loss_counts"]).long().numpy().copy()


def create_sampler(name: str, num_timesteps: int, **kwargs) -> ScheduleSampler:
    """
    Build a timestep sampler by name.

    Args:
        name (`str`): `uniform` ([`UniformSampler`]) or `importance` ([`LossSecondMomentResampler`]).
        num_timesteps (`int`): T, the scheduler's `num_train_timesteps`.
        kwargs: passed on to the sampler (`history_per_term`, `uniform_prob` for `importance`).

    Returns:
        [`ScheduleSampler`]: the sampler.
    """
    if name == "uniform":
        return UniformSampler(num_timesteps, **kwargs)
    if name == "importance":
        return LossSecondMomentResampler(num_timesteps, **kwargs)
    raise ValueError(f"timestep sampler {name!r} is not supported; allowed values: {', '.join(SAMPLER_NAMES)}")
