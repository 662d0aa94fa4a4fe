"""The regression policy: every threshold the gate uses, and the inventory section that sets them.

Defaults live in :class:`Policy`; an inventory may override any of them in a ``regression:``
section (validated by :class:`RegressionSettings`, unknown keys refused)::

    regression:
      min_effect: 0.05          # smallest latency slowdown called a regression (5 %)
      alpha: 0.01               # Mann-Whitney p for the stored-baseline comparison
      confirm: true             # confirm latency suspicions by an interleaved A/B on the device
      suspect_effect: 0.02      # stored-baseline slowdown (with p < alpha) that triggers the A/B
      ab_blocks: 8              # A/B pairs (AB, BA, AB, ... in one agent session)
      ab_runs_per_block: 30     # timed invokes per block, at least ab_min_block_seconds
      ab_min_block_seconds: 0.1 # a block times at least this long
      ab_alpha: 0.05            # one-sided sign test over the pairs
      changepoints: true        # look for steps in each device's nightly medians
      changepoint_window: 60    # nights of history the detector reads
      changepoint_recent: 7     # a step of a new bundle is flagged for this many nights
      energy_rel: 0.10          # energy per inference may grow by max(10 %, energy_abs_mj)
      energy_abs_mj: 0.01       # before it is a regression (PMIC estimates are noisier than RSS)

Every verdict records the policy that produced it (:meth:`Policy.to_dict`), so a report
regenerated months later shows what the gate was asked to do at the time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Optional

from pydantic import Field

from pipeline.config.loader import Strict


@dataclass(frozen=True)
class Policy:
    """Every threshold the regression check uses (their meaning: :mod:`pipeline.farm.regression`)."""

    alpha: float = 0.01
    min_effect: float = 0.05
    ci_level: float = 0.95
    n_bootstrap: int = 2000
    seed: int = 0
    min_samples: int = 10
    top1_drop: float = 0.005
    agreement_tolerance: float = 0.0
    memory_rel: float = 0.05
    memory_abs_mb: float = 2.0
    energy_rel: float = 0.10
    energy_abs_mj: float = 0.01
    noise_window: int = 30
    noise_min_pairs: int = 4
    noise_quantile: float = 0.95
    noise_mad_k: float = 3.0
    # confirmation by interleaved A/B (pipeline.farm.confirmation)
    confirm: bool = True
    suspect_effect: float = 0.02
    ab_blocks: int = 8
    ab_runs_per_block: int = 30
    ab_min_block_seconds: float = 0.1
    ab_alpha: float = 0.05
    # change points over the nightly history (pipeline.farm.changepoints)
    changepoints: bool = True
    changepoint_window: int = 60
    changepoint_recent: int = 7

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Policy":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


DEFAULT_POLICY = Policy()


class RegressionSettings(Strict):
    """The inventory's ``regression:`` section; every key optional, defaults from :class:`Policy`."""

    alpha: Optional[float] = Field(None, gt=0, lt=0.5)
    min_effect: Optional[float] = Field(None, gt=0, lt=10)
    ci_level: Optional[float] = Field(None, gt=0.5, lt=1)
    min_samples: Optional[int] = Field(None, ge=3)
    top1_drop: Optional[float] = Field(None, ge=0, le=1)
    agreement_tolerance: Optional[float] = Field(None, ge=0, le=1)
    memory_rel: Optional[float] = Field(None, ge=0)
    memory_abs_mb: Optional[float] = Field(None, ge=0)
    energy_rel: Optional[float] = Field(None, ge=0)
    energy_abs_mj: Optional[float] = Field(None, ge=0)
    noise_window: Optional[int] = Field(None, ge=2)
    confirm: Optional[bool] = None
    suspect_effect: Optional[float] = Field(None, ge=0, lt=10)
    ab_blocks: Optional[int] = Field(None, ge=2, le=200)
    ab_runs_per_block: Optional[int] = Field(None, ge=3, le=100000)
    ab_min_block_seconds: Optional[float] = Field(None, ge=0, le=600)
    ab_alpha: Optional[float] = Field(None, gt=0, lt=0.5)
    changepoints: Optional[bool] = None
    changepoint_window: Optional[int] = Field(None, ge=4, le=10000)
    changepoint_recent: Optional[int] = Field(None, ge=1, le=10000)

    def to_policy(self, base: Policy = DEFAULT_POLICY) -> Policy:
        return replace(base, **self.model_dump(exclude_none=True))
