"""PyTorch autoencoder with dfencoder semantics for per-user login fingerprinting.

Categorical features are embedded (unknown and rare values share the ``_other`` slot),
numeric features are standard-scaled, binary features enter as 0/1. Training corrupts the
input with swap noise, reconstructs every feature with its own loss (MSE / BCE /
cross-entropy), uses Adam and stops early on a validation split. After training the
per-feature loss mean and std over the training rows are stored with the model, so
``score`` can turn each event's losses into absolute z-scores.

``save``/``load`` use plain files (``model.json`` + ``state_dict.pt``) and only numpy,
pandas and torch, so the Triton python backend (numpy 1.26 / pandas 2.2) loads them too.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CONFIG_FILE = "model.json"
WEIGHTS_FILE = "state_dict.pt"
OTHER = "_other"
NAN_TOKEN = "__nan__"
STD_FLOOR = 1e-3
# Quantiles of the held-out rows' ``mean_abs_z`` kept with a model (its score calibration).
QUANTILE_GRID = np.linspace(0.0, 1.0, 201)


@dataclass
class AutoEncoderConfig:
    """Hyper-parameters of :class:`AutoEncoder` (defaults follow Morpheus's DFP)."""

    categorical: list[str] = field(default_factory=list)
    numeric: list[str] = field(default_factory=list)
    binary: list[str] = field(default_factory=list)
    encoder_layers: list[int] = field(default_factory=lambda: [512, 500])
    decoder_layers: list[int] = field(default_factory=lambda: [512])
    swap_p: float = 0.2
    lr: float = 1e-3
    batch_size: int = 256
    max_epochs: int = 30
    patience: int = 3
    val_fraction: float = 0.1
    min_cats: int = 1
    seed: int = 42
    device: str = "auto"


def feature_config(source: str) -> AutoEncoderConfig:
    """Feature lists of ``source`` (``duo``/``azure``) from the schema, default hyper-parameters."""
    from secml.dfp.schema import FEATURES

    if source not in FEATURES:
        raise ValueError(f"unknown DFP source {source!r}; expected one of {sorted(FEATURES)}")
    spec = FEATURES[source]
    return AutoEncoderConfig(
        categorical=list(spec.categorical), numeric=list(spec.numeric), binary=list(spec.binary)
    )


def embedding_dim(n_categories: int) -> int:
    """Embedding width for a categorical feature, dfencoder's rule ``1.6 * n**0.56``."""
    return int(min(600, max(2, round(1.6 * n_categories**0.56))))


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when available, else CPU; anything else is passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class _Net(nn.Module):
    """Embeddings, an MLP encoder and decoder, and one output head per feature kind."""

    def __init__(
        self,
        cat_sizes: Sequence[int],
        n_num: int,
        n_bin: int,
        encoder_layers: Sequence[int],
        decoder_layers: Sequence[int],
    ) -> None:
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(n, embedding_dim(n)) for n in cat_sizes)
        width = n_num + n_bin + sum(embedding_dim(n) for n in cat_sizes)
        layers: list[nn.Module] = []
        for h in list(encoder_layers) + list(decoder_layers):
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.body = nn.Sequential(*layers)
        self.num_head = nn.Linear(width, n_num) if n_num else None
        self.bin_head = nn.Linear(width, n_bin) if n_bin else None
        self.cat_heads = nn.ModuleList(nn.Linear(width, n) for n in cat_sizes)

    def forward(
        self, num: torch.Tensor, binary: torch.Tensor, cat: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, list[torch.Tensor]]:
        """Reconstruct: numeric values, binary logits, and category logits per feature."""
        parts = [num, binary] + [emb(cat[:, i]) for i, emb in enumerate(self.embeddings)]
        h = self.body(torch.cat(parts, dim=1))
        num_out = self.num_head(h) if self.num_head is not None else None
        bin_out = self.bin_head(h) if self.bin_head is not None else None
        return num_out, bin_out, [head(h) for head in self.cat_heads]


@dataclass
class Scores:
    """What scoring encoded rows gives: per-feature losses and absolute z-scores (rows x
    features), reconstructions per feature, and the rows' max/mean absolute z."""

    losses: np.ndarray
    z: np.ndarray
    preds: dict[str, np.ndarray]
    max_abs_z: np.ndarray
    mean_abs_z: np.ndarray


@dataclass
class _Tensors:
    """Encoded feature matrices of one frame."""

    num: torch.Tensor
    binary: torch.Tensor
    cat: torch.Tensor

    def to(self, device: torch.device) -> _Tensors:
        """Move every matrix to ``device``."""
        return _Tensors(self.num.to(device), self.binary.to(device), self.cat.to(device))

    def rows(self, idx: torch.Tensor) -> _Tensors:
        """Select rows ``idx``."""
        return _Tensors(self.num[idx], self.binary[idx], self.cat[idx])

    def __len__(self) -> int:
        return int(self.num.shape[0])


class AutoEncoder:
    """dfencoder-style autoencoder: ``fit`` on one user's events, ``score`` new ones."""

    def __init__(self, config: AutoEncoderConfig | None = None, **overrides: Any) -> None:
        cfg = copy.deepcopy(config) if config is not None else AutoEncoderConfig()
        for k, v in overrides.items():
            if not hasattr(cfg, k):
                raise TypeError(f"unknown AutoEncoder parameter {k!r}")
            setattr(cfg, k, v)
        if not (cfg.categorical or cfg.numeric or cfg.binary):
            raise ValueError("AutoEncoder needs at least one categorical, numeric or binary column")
        dup = set(cfg.categorical) & set(cfg.numeric) | set(cfg.binary) & (
            set(cfg.categorical) | set(cfg.numeric)
        )
        if dup:
            raise ValueError(f"features listed in more than one kind: {sorted(dup)}")
        if not 0.0 <= cfg.swap_p < 1.0:
            raise ValueError(f"swap_p must be in [0, 1), got {cfg.swap_p}")
        if not 0.0 < cfg.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {cfg.val_fraction}")
        self.config = cfg
        self.device = resolve_device(cfg.device)
        self.categories: dict[str, list[str]] = {}
        self.num_mean: dict[str, float] = {}
        self.num_std: dict[str, float] = {}
        self.loss_mean: dict[str, float] = {}
        self.loss_std: dict[str, float] = {}
        self.train_loss: float = math.nan
        self.val_loss: float = math.nan
        self.epochs_trained: int = 0
        self.n_train_rows: int = 0
        self.history: list[dict[str, float]] = []
        self.val_index: pd.Index | None = None
        self.score_quantiles: list[float] = []
        self.n_score_rows: int = 0
        # the generic model carries the risk model (``secml.dfp.scoring.RiskModel``)
        self.risk: Any = None
        self.net: _Net | None = None
        self._code_maps: dict[str, dict[str, int]] | None = None
        self._scale: tuple[np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------------ encoding
    @property
    def features(self) -> list[str]:
        """All feature columns in the order scores are reported."""
        c = self.config
        return list(c.categorical) + list(c.numeric) + list(c.binary)

    def _check_columns(self, df: pd.DataFrame) -> None:
        """Refuse a frame missing any feature column, naming the columns."""
        missing = [f for f in self.features if f not in df.columns]
        if missing:
            raise KeyError(f"input frame is missing feature column(s) {missing}")

    def _fit_encoders(self, df: pd.DataFrame) -> None:
        """Learn category vocabularies and numeric scalers from training rows."""
        self._code_maps = None
        for col in self.config.categorical:
            counts = _as_tokens(df[col]).value_counts()
            kept = counts[counts >= self.config.min_cats].index
            self.categories[col] = [OTHER] + sorted(str(v) for v in kept if v != OTHER)
        for col in self.config.numeric:
            values = _as_float(df[col], col)
            mean = float(np.nanmean(values)) if np.isfinite(values).any() else 0.0
            std = float(np.nanstd(values)) if np.isfinite(values).any() else 1.0
            self.num_mean[col] = mean
            self.num_std[col] = std if std > 1e-9 else 1.0

    def _encode(self, df: pd.DataFrame) -> _Tensors:
        """Turn a frame into numeric, binary and category-code tensors."""
        self._check_columns(df)
        c = self.config
        num = np.zeros((len(df), len(c.numeric)), dtype=np.float64)
        for j, col in enumerate(c.numeric):
            num[:, j] = _as_float(df[col], col)
        binary = np.zeros((len(df), len(c.binary)), dtype=np.float32)
        for j, col in enumerate(c.binary):
            binary[:, j] = _as_binary(df[col], col)
        tokens = [_as_tokens(df[col]).to_numpy(dtype=object) for col in c.categorical]
        return self.encode_arrays(num, binary, tokens)

    def encode_arrays(
        self, num: np.ndarray, binary: np.ndarray, tokens: Sequence[Sequence[str]]
    ) -> _Tensors:
        """Tensors from arrays: ``num`` raw numeric values (float64, rows x numeric), ``binary``
        0/1 (rows x binary), ``tokens`` one sequence of category strings per categorical
        feature. ``_encode`` (frames) and serving (columns) both end here."""
        c = self.config
        n = len(num)
        x = np.where(np.isfinite(num), num, self._num_mean)
        scaled = ((x - self._num_mean) / self._num_std).astype(np.float32)
        cat = np.zeros((n, len(c.categorical)), dtype=np.int64)
        codes = self._codes()
        for j, col in enumerate(c.categorical):
            get = codes[col].get
            cat[:, j] = [get(v, 0) for v in tokens[j]]  # unknown -> 0 = _other
        bin32 = np.ascontiguousarray(binary, dtype=np.float32)
        return _Tensors(torch.from_numpy(scaled), torch.from_numpy(bin32), torch.from_numpy(cat))

    @property
    def _num_mean(self) -> np.ndarray:
        """Numeric means in feature order (float64)."""
        return np.array([self.num_mean[col] for col in self.config.numeric], dtype=np.float64)

    @property
    def _num_std(self) -> np.ndarray:
        """Numeric standard deviations in feature order (float64)."""
        return np.array([self.num_std[col] for col in self.config.numeric], dtype=np.float64)

    def _loss_scale(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature loss mean and std (floored) in feature order, built once."""
        cached = self._scale
        if cached is None:
            f = self.features
            cached = self._scale = (
                np.array([self.loss_mean[k] for k in f], dtype=np.float64),
                np.array([max(self.loss_std[k], STD_FLOOR) for k in f], dtype=np.float64),
            )
        return cached

    def _codes(self) -> dict[str, dict[str, int]]:
        """Category -> code per categorical feature (1-based; 0 is ``_other``), built once."""
        cached = self._code_maps
        if cached is None:
            cached = {
                col: {v: i + 1 for i, v in enumerate(self.categories[col][1:])}
                for col in self.config.categorical
            }
            self._code_maps = cached
        return cached

    # ------------------------------------------------------------------ training
    def _build(self) -> None:
        """Create the network for the learned vocabularies."""
        c = self.config
        torch.manual_seed(c.seed)
        self.net = _Net(
            [len(self.categories[col]) for col in c.categorical],
            len(c.numeric),
            len(c.binary),
            c.encoder_layers,
            c.decoder_layers,
        ).to(self.device)

    def _swap_noise(self, x: _Tensors, gen: torch.Generator) -> _Tensors:
        """Replace each cell with probability ``swap_p`` by the same column of a random row."""
        p = self.config.swap_p
        if p == 0.0:
            return x
        n = len(x)

        def swap(m: torch.Tensor) -> torch.Tensor:
            if m.shape[1] == 0:
                return m
            mask = torch.rand(m.shape, generator=gen, device=m.device) < p
            donors = torch.randint(0, n, m.shape, generator=gen, device=m.device)
            swapped = torch.gather(m, 0, donors)
            return torch.where(mask, swapped, m)

        return _Tensors(swap(x.num), swap(x.binary), swap(x.cat))

    def _feature_losses(self, x: _Tensors, target: _Tensors) -> torch.Tensor:
        """Per-row, per-feature reconstruction losses, shape (rows, features)."""
        assert self.net is not None
        return _losses(self.net(x.num, x.binary, x.cat), target)

    def _mean_loss(self, x: _Tensors) -> float:
        """Mean over rows and features of the clean reconstruction loss."""
        assert self.net is not None
        self.net.eval()
        with torch.no_grad():
            return float(self._losses_batched(x).mean().item())

    def _losses_batched(self, x: _Tensors, batch: int = 8192) -> torch.Tensor:
        """Per-feature losses of clean input in chunks, on CPU."""
        out = [
            self._feature_losses(x.rows(slice(i, i + batch)), x.rows(slice(i, i + batch))).cpu()
            for i in range(0, len(x), batch)
        ]
        return torch.cat(out) if out else torch.zeros((0, len(self.features)))

    def fit(
        self, df: pd.DataFrame, on_epoch: Callable[[dict[str, float]], bool] | None = None
    ) -> AutoEncoder:
        """Train on ``df`` with early stopping on a held-out validation split; return self.

        ``on_epoch`` sees each epoch's ``{"epoch", "train_loss", "val_loss"}`` as it ends; a
        true return stops training there (a tuning trial its pruner stops).
        """
        self._check_columns(df)
        c = self.config
        if len(df) < 2:
            raise ValueError(f"need at least 2 rows to train, got {len(df)}")
        rng = np.random.default_rng(c.seed)
        order = rng.permutation(len(df))
        n_val = max(1, int(round(len(df) * c.val_fraction)))
        val_pos, train_pos = np.sort(order[:n_val]), np.sort(order[n_val:])
        train_df, val_df = df.iloc[train_pos], df.iloc[val_pos]
        self.val_index = df.index[val_pos]
        self._fit_encoders(train_df)
        self._build()
        assert self.net is not None
        train = self._encode(train_df).to(self.device)
        val = self._encode(val_df).to(self.device)
        gen = torch.Generator(device=self.device)
        gen.manual_seed(c.seed)
        opt = torch.optim.Adam(self.net.parameters(), lr=c.lr)
        best, best_state, bad = math.inf, None, 0
        self.history = []
        n = len(train)
        for epoch in range(1, c.max_epochs + 1):
            self.net.train()
            perm = torch.randperm(n, generator=gen, device=self.device)
            total = 0.0
            for i in range(0, n, c.batch_size):
                target = train.rows(perm[i : i + c.batch_size])
                noisy = self._swap_noise(target, gen)
                loss = self._feature_losses(noisy, target).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.item()) * len(target)
            val_loss = self._mean_loss(val)
            self.history.append({"epoch": epoch, "train_loss": total / n, "val_loss": val_loss})
            log.debug("epoch %d train %.4f val %.4f", epoch, total / n, val_loss)
            stop = on_epoch is not None and bool(on_epoch(self.history[-1]))
            if val_loss < best - 1e-6:
                best, bad = val_loss, 0
                best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
            else:
                bad += 1
                if bad >= c.patience:
                    break
            if stop:
                break
        if best_state is not None:
            self.net.load_state_dict(best_state)
        self.epochs_trained = len(self.history)
        self.val_loss = best
        self.n_train_rows = n
        self.net.eval()
        with torch.no_grad():
            losses = self._losses_batched(train).numpy().astype(np.float64)
        self.train_loss = float(losses.mean())
        for j, f in enumerate(self.features):
            self.loss_mean[f] = float(losses[:, j].mean())
            self.loss_std[f] = float(losses[:, j].std())
        self._scale = None
        self.score_quantiles = [
            float(q) for q in np.quantile(self.score(val_df)["mean_abs_z"], QUANTILE_GRID)
        ]
        self.n_score_rows = len(val_df)
        return self

    def threshold_for(self, alert_rate: float) -> float:
        """The ``mean_abs_z`` that a share ``alert_rate`` of this model's held-out rows exceed."""
        if not self.score_quantiles:
            return math.inf
        return float(np.interp(1.0 - alert_rate, QUANTILE_GRID, self.score_quantiles))

    def surprisal(self, mean_abs_z: np.ndarray) -> np.ndarray:
        """``-log10 P(Z >= z)`` of each ``mean_abs_z`` among this model's held-out rows.

        This puts every model's score on one scale (how rare the event is for its own model),
        whatever its z-scores' spread; 0 for a model saved without held-out quantiles.
        """
        z = np.asarray(mean_abs_z, dtype=np.float64)
        if not self.score_quantiles:
            return np.zeros_like(z)
        tail = 1.0 - np.interp(z, self.score_quantiles, QUANTILE_GRID, left=0.0, right=1.0)
        floor = 1.0 / (self.n_score_rows + 1)
        return -np.log10(np.clip(tail, floor, 1.0))

    def loss(self, df: pd.DataFrame) -> float:
        """Mean clean reconstruction loss of ``df`` (used by the promotion gate)."""
        self._require_fitted()
        return self._mean_loss(self._encode(df).to(self.device))

    # ------------------------------------------------------------------ scoring
    def _require_fitted(self) -> None:
        if self.net is None or not self.loss_mean:
            raise RuntimeError("AutoEncoder is not trained: call fit() or load() first")

    def score(self, df: pd.DataFrame) -> pd.DataFrame:
        """Per-feature ``_loss``, ``_z_loss`` (absolute), ``_pred`` and ``max/mean_abs_z``."""
        self._require_fitted()
        got = self.score_tensors(self._encode(df))
        out: dict[str, Any] = {}
        for j, f in enumerate(self.features):
            out[f"{f}_loss"] = got.losses[:, j]
            out[f"{f}_z_loss"] = got.z[:, j]
            out[f"{f}_pred"] = got.preds[f]
        out["max_abs_z"] = got.max_abs_z
        out["mean_abs_z"] = got.mean_abs_z
        return pd.DataFrame(out, index=df.index)

    def _for_inference(self, x: _Tensors) -> _Tensors:
        """``x`` on the model's device, the network fitted and in eval mode."""
        self._require_fitted()
        assert self.net is not None
        if self.net.training:
            self.net.eval()
        return x if x.num.device == self.device else x.to(self.device)

    def score_tensors(self, x: _Tensors, batch: int = 8192) -> Scores:
        """Losses, absolute z-scores and reconstructions of encoded rows: one forward per
        chunk of ``batch`` rows (:meth:`forward_losses`) gives both the losses and the
        predictions (what ``score`` and the served model both report)."""
        x = self._for_inference(x)
        c = self.config
        chunks = [self.forward_losses(x.rows(slice(i, i + batch))) for i in range(0, len(x), batch)]
        losses = [ch[0] for ch in chunks]
        nums = [ch[1] for ch in chunks if ch[1] is not None]
        bins = [ch[2] for ch in chunks if ch[2] is not None]
        codes_parts = [ch[3] for ch in chunks]
        mean, std = self._loss_scale()
        loss = _join(losses, np.concatenate) if losses else np.zeros((0, len(mean)))
        loss = loss.astype(np.float64)
        zs = np.abs(loss - mean) / std
        preds: dict[str, np.ndarray] = {}
        for j, col in enumerate(c.categorical):
            codes = (
                _join([p[:, j] for p in codes_parts], np.concatenate)
                if chunks
                else np.zeros(0, int)
            )
            preds[col] = np.asarray(self.categories[col], dtype=object)[codes]
        num = _join(nums, np.concatenate) if nums else np.zeros((0, len(c.numeric)))
        for j, col in enumerate(c.numeric):
            preds[col] = num[:, j].astype(np.float64) * self.num_std[col] + self.num_mean[col]
        binary = _join(bins, np.concatenate) if bins else np.zeros((0, len(c.binary)), bool)
        for j, col in enumerate(c.binary):
            preds[col] = binary[:, j].astype(bool)
        n = len(loss)
        return Scores(
            losses=loss,
            z=zs,
            preds=preds,
            max_abs_z=zs.max(axis=1) if n else np.zeros(0),
            mean_abs_z=zs.mean(axis=1) if n else np.zeros(0),
        )

    def forward_losses(
        self, x: _Tensors
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray]:
        """One forward of encoded rows (``score_tensors`` runs one per chunk): float32
        per-feature losses, the scaled numeric reconstructions (float32, None without numeric
        features), binary logits > 0 (None without binary features) and the predicted
        category codes (int64, rows x categorical). Serving turns many models' outputs into
        z-scores and reconstructions in one pass (``secml.dfp.serve``)."""
        x = self._for_inference(x)
        with torch.inference_mode():
            outputs = self.net(x.num, x.binary, x.cat)
            loss = _losses(outputs, x).cpu().numpy()
            num_out, bin_out, cat_out = outputs
            if cat_out:
                codes = torch.stack([o.argmax(dim=1) for o in cat_out], dim=1).cpu().numpy()
            else:
                codes = np.zeros((len(x), 0), dtype=np.int64)
            num = None if num_out is None else num_out.cpu().numpy()
            binary = None if bin_out is None else (bin_out > 0).cpu().numpy()
        return loss, num, binary, codes

    # ------------------------------------------------------------------ persistence
    def to(self, device: str | torch.device) -> AutoEncoder:
        """Move the network to ``device`` (e.g. after loading on another machine)."""
        self.device = torch.device(device)
        if self.net is not None:
            self.net.to(self.device)
        return self

    def metadata(self) -> dict[str, Any]:
        """Everything but the weights, as JSON-ready data."""
        cfg = asdict(self.config)
        return {
            "format_version": FORMAT_VERSION,
            "config": cfg,
            "categories": self.categories,
            "num_mean": self.num_mean,
            "num_std": self.num_std,
            "loss_mean": self.loss_mean,
            "loss_std": self.loss_std,
            "train_loss": _json_float(self.train_loss),
            "val_loss": _json_float(self.val_loss),
            "epochs_trained": self.epochs_trained,
            "n_train_rows": self.n_train_rows,
            "history": self.history,
            "score_quantiles": self.score_quantiles,
            "n_score_rows": self.n_score_rows,
        }

    def save(self, path: str | Path) -> Path:
        """Write ``model.json`` and ``state_dict.pt`` into directory ``path``; return it."""
        self._require_fitted()
        assert self.net is not None
        d = Path(path)
        d.mkdir(parents=True, exist_ok=True)
        (d / CONFIG_FILE).write_text(json.dumps(self.metadata(), indent=1, sort_keys=True))
        state = {k: v.detach().cpu() for k, v in self.net.state_dict().items()}
        torch.save(state, d / WEIGHTS_FILE)
        if self.risk is not None:
            self.risk.save(d)
        return d

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> AutoEncoder:
        """Load a model written by :meth:`save` onto ``device``."""
        d = Path(path)
        cfg_file, w_file = d / CONFIG_FILE, d / WEIGHTS_FILE
        if not cfg_file.is_file() or not w_file.is_file():
            raise FileNotFoundError(
                f"{d} is not a saved AutoEncoder (needs {CONFIG_FILE}, {WEIGHTS_FILE})"
            )
        meta = json.loads(cfg_file.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{cfg_file}: unsupported format_version {meta.get('format_version')}")
        cfg = AutoEncoderConfig(**{**meta["config"], "device": device})
        model = cls(cfg)
        model.categories = {k: list(v) for k, v in meta["categories"].items()}
        model.num_mean, model.num_std = meta["num_mean"], meta["num_std"]
        model.loss_mean, model.loss_std = meta["loss_mean"], meta["loss_std"]
        model.train_loss = _from_json_float(meta["train_loss"])
        model.val_loss = _from_json_float(meta["val_loss"])
        model.epochs_trained = int(meta["epochs_trained"])
        model.n_train_rows = int(meta["n_train_rows"])
        model.history = list(meta.get("history", []))
        model.score_quantiles = [float(q) for q in meta.get("score_quantiles", [])]
        model.n_score_rows = int(meta.get("n_score_rows", 0))
        model._build()
        assert model.net is not None
        state = torch.load(w_file, map_location=model.device, weights_only=True)
        model.net.load_state_dict(state)
        model.net.eval()
        from secml.dfp.scoring import RISK_FILE, RiskModel

        if (d / RISK_FILE).is_file():
            model.risk = RiskModel.load(d)
        return model


def find_model_dir(root: str | Path) -> Path:
    """The directory under ``root`` (inclusive) that holds a saved AutoEncoder."""
    root = Path(root)
    if (root / CONFIG_FILE).is_file() and (root / WEIGHTS_FILE).is_file():
        return root
    for cfg in sorted(root.rglob(CONFIG_FILE)):
        if (cfg.parent / WEIGHTS_FILE).is_file():
            return cfg.parent
    raise FileNotFoundError(f"no saved AutoEncoder ({CONFIG_FILE} + {WEIGHTS_FILE}) under {root}")


# ---------------------------------------------------------------------- helpers
def _join(parts: list[Any], cat: Any) -> Any:
    """``cat(parts)``, or the one part itself (no copy for a single chunk)."""
    return parts[0] if len(parts) == 1 else cat(parts)


def _losses(
    outputs: tuple[torch.Tensor | None, torch.Tensor | None, list[torch.Tensor]],
    target: _Tensors,
) -> torch.Tensor:
    """Per-row, per-feature losses of the network's outputs against ``target``:
    cross-entropy per category, then squared error per number, then BCE per binary."""
    num_out, bin_out, cat_out = outputs
    parts = [
        F.cross_entropy(out, target.cat[:, i], reduction="none").unsqueeze(1)
        for i, out in enumerate(cat_out)
    ]
    if num_out is not None:
        parts.append(F.mse_loss(num_out, target.num, reduction="none"))
    if bin_out is not None:
        parts.append(F.binary_cross_entropy_with_logits(bin_out, target.binary, reduction="none"))
    return torch.cat(parts, dim=1)


def _as_tokens(s: pd.Series) -> pd.Series:
    """Categorical values as strings; missing values become one token."""
    obj = s.astype(object)
    return obj.where(obj.notna(), NAN_TOKEN).astype(str)


def _as_float(s: pd.Series, col: str) -> np.ndarray:
    """Numeric column as float64, naming the first bad row on failure."""
    try:
        return pd.to_numeric(s, errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    except (ValueError, TypeError):
        bad = pd.to_numeric(s, errors="coerce").isna() & s.notna()
        idx = s.index[bad.to_numpy()][0]
        raise ValueError(
            f"numeric feature {col!r}: row {idx!r} has non-numeric value {s.loc[idx]!r}"
        ) from None


_TRUE = {"true", "1", "yes", "success", "t", "y"}
_FALSE = {"false", "0", "no", "f", "n", "", NAN_TOKEN}


def _as_binary(s: pd.Series, col: str) -> np.ndarray:
    """Binary column as 0/1 floats; booleans, 0/1 and true/false strings are accepted."""
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
        v = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=0.0)
        v = np.nan_to_num(v, nan=0.0)
        bad = ~np.isin(v, (0.0, 1.0))
        if bad.any():
            idx = s.index[bad][0]
            raise ValueError(f"binary feature {col!r}: row {idx!r} has value {s.loc[idx]!r}")
        return v.astype(np.float32)
    tokens = _as_tokens(s).str.strip().str.lower()
    ok = tokens.isin(_TRUE | _FALSE)
    if not ok.all():
        idx = s.index[~ok.to_numpy()][0]
        raise ValueError(f"binary feature {col!r}: row {idx!r} has value {s.loc[idx]!r}")
    return tokens.isin(_TRUE).to_numpy(dtype=np.float32)


def _json_float(v: float) -> float | None:
    """NaN/inf as JSON null."""
    return None if v is None or not math.isfinite(v) else float(v)


def _from_json_float(v: float | None) -> float:
    """JSON null back to NaN."""
    return math.nan if v is None else float(v)
