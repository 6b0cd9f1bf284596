"""Segment-level ABP alerts: one alert per GPU mining episode instead of one per sample.

A GPU's episode opens at its first flagged sample and stays open while flags keep coming; it
closes after ``gap`` consecutive unflagged samples of that GPU (a duty-cycled miner's pauses
shorter than ``gap`` stay inside one episode). Rows without a uuid are not grouped (each flag is
its own episode). State is kept per GPU uuid, so blocks, files and streams can be fed in turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

DEFAULT_GAP = 10
EPISODE_SOURCE = "nvsmi-episode"  # the detections-store source of episode alerts


@dataclass
class Episode:
    """One GPU's run of mining alerts."""

    uuid: str | None
    start: str | None  # timestamp of the first flagged sample
    end: str | None  # timestamp of the last flagged sample
    samples: int  # samples from the first to the last flagged one
    flagged: int
    max_score: float

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (a JSON line of the alerts file)."""
        return asdict(self)

    def detection(self, model_version: str, threshold: float | None = None) -> dict[str, Any]:
        """The episode as one row of the detections store (detector ``abp``, source
        ``nvsmi-episode``): one alert an analyst labels for the whole run, not one per sample."""
        return {
            "detector": "abp",
            "source": EPISODE_SOURCE,
            "user": self.uuid,
            "event_time": self.start,
            "score": self.max_score,
            "is_anomaly": True,
            "model_version": model_version,
            "record": self.as_dict(),
            "details": {"p_mining": self.max_score, "threshold": threshold, **self.as_dict()},
        }


class EpisodeTracker:
    """Turns per-sample flags into per-GPU episodes."""

    def __init__(self, gap: int = DEFAULT_GAP) -> None:
        """Close an episode after ``gap`` unflagged samples in a row."""
        if gap < 1:
            raise ValueError(f"gap must be >= 1 sample, got {gap}")
        self.gap = gap
        self._open: dict[str, tuple[Episode, int]] = {}  # uuid -> (episode, quiet samples)

    def update(
        self,
        uuids: Sequence[str | None],
        times: Sequence[str | None],
        scores: Sequence[float],
        flags: Sequence[bool],
    ) -> list[Episode]:
        """Feed rows (in time order per GPU); return the episodes they closed."""
        closed: list[Episode] = []
        for uuid, ts, sc, fl in zip(uuids, times, scores, flags, strict=True):
            if uuid is None:
                if fl:
                    closed.append(Episode(None, ts, ts, 1, 1, float(sc)))
                continue
            cur = self._open.get(uuid)
            if cur is None:
                if fl:
                    self._open[uuid] = (Episode(uuid, ts, ts, 1, 1, float(sc)), 0)
                continue
            ep, quiet = cur
            if fl:
                ep.samples += quiet + 1
                ep.flagged += 1
                ep.end = ts
                ep.max_score = max(ep.max_score, float(sc))
                self._open[uuid] = (ep, 0)
            elif quiet + 1 >= self.gap:
                closed.append(ep)
                del self._open[uuid]
            else:
                self._open[uuid] = (ep, quiet + 1)
        return closed

    def flush(self) -> list[Episode]:
        """Close and return every open episode (end of input)."""
        out = [ep for ep, _ in self._open.values()]
        self._open.clear()
        return out
