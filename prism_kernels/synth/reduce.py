"""Reduction of example embeddings ``[N, d]`` to K = 2 or 3 dimensions for EmbedSDG's density map.

Three methods, each a fitted object with ``.transform(new_embeddings) -> [m, K]`` so generated and
interpolated examples land on the same map:

- ``pca``: centre, then the top-K right singular vectors (exact ``torch.linalg.svd`` when the data is
  small, ``torch.pca_lowrank`` with a fixed seed otherwise). ``transform`` is affine:
  ``(x - mean) @ components.T``.
- ``svd``: TruncatedSVD, no centring (``torch.svd_lowrank`` with a fixed seed). ``transform`` is
  linear: ``x @ components.T``.
- ``tsne``: openTSNE; ``transform`` places new points into the fitted embedding (openTSNE's own
  ``TSNEEmbedding.transform``). Not linear, so an interpolated point need not land between its seeds.

Signs are fixed (the entry of largest magnitude of each component is positive), so the same data gives
the same map on every run. Randomised steps run under a forked RNG seeded with ``seed``: global RNG
state is neither read nor changed. Coordinates are float64.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["METHODS", "PCAReducer", "SVDReducer", "TSNEReducer", "Reducer", "fit_reducer", "load_reducer"]

METHODS = ("pca", "svd", "tsne")

#: Above this many multiply-adds (N * d * min(N, d)) PCA uses the randomised pca_lowrank.
EXACT_SVD_LIMIT = 4e9


def _as_matrix(x, name: str = "embeddings") -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.dim() != 2:
        raise ValueError(f"{name} must be [N, d], got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {t.dtype}")
    t = t.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).any(dim=1).nonzero()[0])
        raise ValueError(f"{name}: row {bad} is not finite")
    return t


def _fix_signs(components: torch.Tensor) -> torch.Tensor:
    """[K, d]: each row flipped so that its entry of largest magnitude is positive."""
    idx = components.abs().argmax(dim=1)
    signs = torch.sign(components.gather(1, idx.unsqueeze(1)))
    signs[signs == 0] = 1
    return components * signs


def _check_dims(dims: int) -> int:
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims}")
    return int(dims)


class Reducer:
    """A fitted reduction ``[*, d] -> [*, K]``; subclasses implement ``transform``."""

    method: str
    dims: int

    def transform(self, embeddings) -> torch.Tensor:  # pragma: no cover - interface
        """``[m, d]`` embeddings -> ``[m, K]`` float64 coordinates on the fitted map."""
        raise NotImplementedError

    def state(self) -> dict[str, torch.Tensor]:  # pragma: no cover - interface
        """Tensors that, with ``meta()``, rebuild the reducer (safetensors-friendly)."""
        raise NotImplementedError

    def meta(self) -> dict[str, Any]:
        return {"method": self.method, "dims": self.dims}


class PCAReducer(Reducer):
    """PCA: ``transform(x) = (x - mean) @ components.T``; mean ``[d]``, components ``[K, d]``."""

    method = "pca"

    def __init__(self, mean: torch.Tensor, components: torch.Tensor):
        self.mean = mean.to(torch.float64)
        self.components = components.to(torch.float64)
        self.dims = int(components.shape[0])

    @classmethod
    def fit(cls, embeddings, dims: int = 2, seed: int = 0) -> "PCAReducer":
        """Fits on ``[N, d]`` embeddings (N >= 2)."""
        x = _as_matrix(embeddings)
        dims = _check_dims(dims)
        n, d = x.shape
        if n < 2:
            raise ValueError(f"embeddings: PCA needs at least 2 rows, got {n}")
        mean = x.mean(dim=0)
        centred = x - mean
        if n * d * min(n, d) <= EXACT_SVD_LIMIT or min(n, d) <= dims + 10:
            _, _, vh = torch.linalg.svd(centred, full_matrices=False)
            components = vh[:dims]
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                _, _, v = torch.pca_lowrank(x, q=min(dims + 10, n, d), center=True, niter=6)
            components = v[:, :dims].T
        components = torch.nn.functional.pad(components, (0, 0, 0, dims - components.shape[0]))
        return cls(mean, _fix_signs(components))

    def transform(self, embeddings) -> torch.Tensor:
        x = _as_matrix(embeddings)
        if x.shape[1] != self.mean.shape[0]:
            raise ValueError(f"embeddings must be [m, {self.mean.shape[0]}], got shape {tuple(x.shape)}")
        return (x - self.mean) @ self.components.T

    def state(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "components": self.components}


class SVDReducer(Reducer):
    """TruncatedSVD (no centring): ``transform(x) = x @ components.T``; components ``[K, d]``."""

    method = "svd"

    def __init__(self, components: torch.Tensor):
        self.components = components.to(torch.float64)
        self.dims = int(components.shape[0])

    @classmethod
    def fit(cls, embeddings, dims: int = 2, seed: int = 0) -> "SVDReducer":
        """Fits on ``[N, d]`` embeddings (N >= 1)."""
        x = _as_matrix(embeddings)
        dims = _check_dims(dims)
        n, d = x.shape
        if n < 1:
            raise ValueError("embeddings: TruncatedSVD needs at least 1 row")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            _, _, v = torch.svd_lowrank(x, q=min(dims + 10, n, d), niter=6)
        components = v[:, :dims].T
        components = torch.nn.functional.pad(components, (0, 0, 0, dims - components.shape[0]))
        return cls(_fix_signs(components))

    def transform(self, embeddings) -> torch.Tensor:
        x = _as_matrix(embeddings)
        if x.shape[1] != self.components.shape[1]:
            raise ValueError(f"embeddings must be [m, {self.components.shape[1]}], got shape {tuple(x.shape)}")
        return x @ self.components.T

    def state(self) -> dict[str, torch.Tensor]:
        return {"components": self.components}


class TSNEReducer(Reducer):
    """t-SNE with openTSNE; ``transform`` optimises new points against the fixed fitted map.

    Args of :meth:`fit`: perplexity (clipped to (N - 1) / 3), seed (openTSNE's random_state), n_jobs.
    """

    method = "tsne"

    def __init__(self, embedding, perplexity: float, seed: int):
        self.embedding = embedding  # openTSNE.TSNEEmbedding [N, K], with its affinities
        self.perplexity = float(perplexity)
        self.seed = int(seed)
        self.dims = int(embedding.shape[1])

    @staticmethod
    def _perplexity(n: int, perplexity: float) -> float:
        return float(max(1.0, min(perplexity, (n - 1) / 3)))

    @classmethod
    def fit(cls, embeddings, dims: int = 2, seed: int = 0, perplexity: float = 30.0,
            n_jobs: int = 1) -> "TSNEReducer":
        """Fits on ``[N, d]`` embeddings (N >= 4)."""
        import openTSNE

        x = _as_matrix(embeddings).numpy()
        dims = _check_dims(dims)
        if x.shape[0] < 4:
            raise ValueError(f"embeddings: t-SNE needs at least 4 rows, got {x.shape[0]}")
        perp = cls._perplexity(x.shape[0], perplexity)
        # openTSNE picks Barnes-Hut below 10k points (FFT is slow to start on small maps); its FFT method is
        # for 1-2 dims only, so 3-D always uses Barnes-Hut.
        tsne = openTSNE.TSNE(n_components=dims, perplexity=perp, random_state=seed, n_jobs=n_jobs,
                             negative_gradient_method="auto" if dims <= 2 else "bh", verbose=False)
        return cls(tsne.fit(x), perp, seed)

    @classmethod
    def from_coordinates(cls, embeddings, coordinates, perplexity: float, seed: int, n_jobs: int = 1):
        """Rebuilds a fitted map from its training embeddings ``[N, d]`` and coordinates ``[N, K]``
        (the affinities are recomputed; no pickle)."""
        import openTSNE

        x = _as_matrix(embeddings).numpy()
        coords = np.asarray(torch.as_tensor(coordinates, dtype=torch.float64))
        affinities = openTSNE.affinity.PerplexityBasedNN(x, perplexity=perplexity, random_state=seed,
                                                         n_jobs=n_jobs, verbose=False)
        dims = coords.shape[1]
        embedding = openTSNE.TSNEEmbedding(coords, affinities, random_state=seed,
                                           negative_gradient_method="auto" if dims <= 2 else "bh")
        return cls(embedding, perplexity, seed)

    @property
    def coordinates(self) -> torch.Tensor:
        """``[N, K]`` float64 coordinates of the training points."""
        return torch.from_numpy(np.asarray(self.embedding, dtype=np.float64).copy())

    def transform(self, embeddings) -> torch.Tensor:
        x = _as_matrix(embeddings).numpy()
        if x.shape[0] == 0:
            return torch.zeros(0, self.dims, dtype=torch.float64)
        # openTSNE's transform first re-centres the fitted map in place (on its bounding-box centre)
        # and returns the new points in that frame: keep the map as fitted and shift the points back.
        saved = np.array(self.embedding, dtype=np.float64, copy=True)
        shift = (saved.max(axis=0) + saved.min(axis=0)) / 2
        try:
            placed = np.asarray(self.embedding.transform(x), dtype=np.float64) + shift
        finally:
            np.copyto(self.embedding, saved)
        return torch.from_numpy(placed.copy())

    def state(self) -> dict[str, torch.Tensor]:
        return {"coordinates": self.coordinates}

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "perplexity": self.perplexity, "seed": self.seed}


def fit_reducer(embeddings, method: str = "pca", dims: int = 2, seed: int = 0,
                **options) -> tuple[Reducer, torch.Tensor]:
    """Fits ``method`` ("pca", "svd", "tsne") on ``[N, d]`` embeddings.

    Returns:
        ``(reducer, coordinates)``: the fitted reducer and the ``[N, K]`` float64 coordinates of the
        training embeddings (for t-SNE the optimised embedding itself, not ``transform`` of it).
    """
    if method == "pca":
        reducer = PCAReducer.fit(embeddings, dims, seed)
    elif method == "svd":
        reducer = SVDReducer.fit(embeddings, dims, seed)
    elif method == "tsne":
        reducer = TSNEReducer.fit(embeddings, dims, seed, **options)
        return reducer, reducer.coordinates
    else:
        raise ValueError(f"reduce: unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return reducer, reducer.transform(embeddings)


def load_reducer(meta: dict, state: dict[str, torch.Tensor], embeddings=None) -> Reducer:
    """Rebuilds a reducer from ``reducer.meta()`` and ``reducer.state()`` (t-SNE also needs the training
    ``embeddings`` to recompute its affinities)."""
    method = meta.get("method")
    if method == "pca":
        return PCAReducer(state["mean"], state["components"])
    if method == "svd":
        return SVDReducer(state["components"])
    if method == "tsne":
        if embeddings is None:
            raise ValueError("load_reducer: t-SNE needs the training embeddings")
        return TSNEReducer.from_coordinates(embeddings, state["coordinates"], meta["perplexity"], meta["seed"])
    raise ValueError(f"load_reducer: unknown method {method!r}")
