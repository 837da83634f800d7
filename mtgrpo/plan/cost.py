"""What a recipe may cost: the dated price table times instances and max_run, spot, tuning."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from mtgrpo.errors import Problem, UserError

PRICES_FILE = Path(__file__).with_name("prices.json")


@dataclass(frozen=True)
class PriceTable:
    source: str  # the file and the date it states
    date: str
    currency: str
    spot_savings: float
    regions: Mapping[str, Mapping[str, float]]

    def price(self, region: str, instance_type: str) -> float | None:
        return (self.regions.get(region) or {}).get(instance_type)


def load_prices(override: Path | None = None) -> PriceTable:
    """The shipped table, with ``override``'s rows (same layout) replacing matching ones."""
    base = _read(PRICES_FILE, "prices.json (shipped)")
    regions = {r: dict(rows) for r, rows in base["regions"].items()}
    date, currency, savings = base["date"], base["currency"], float(base["spot_savings"])
    source = f"mtgrpo/plan/prices.json ({date})"
    if override is not None:
        extra = _read(Path(override), str(override))
        for region, rows in (extra.get("regions") or {}).items():
            if not isinstance(rows, Mapping) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
                    for v in rows.values()):
                raise UserError(Problem(str(override), f"regions.{region}",
                                        "must map instance types to prices",
                                        "{\"ml.g5.2xlarge\": 1.515, ...} in USD per hour"))
            regions.setdefault(region, {}).update({k: float(v) for k, v in rows.items()})
        date = str(extra.get("date", date))
        currency = str(extra.get("currency", currency))
        savings = float(extra.get("spot_savings", savings))
        source = f"{override} ({date}) over {source}"
    return PriceTable(source, date, currency, savings, regions)


def _read(path: Path, name: str) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise UserError(Problem(name, "", f"cannot read the price file: {err.strerror}",
                                "a JSON file like mtgrpo/plan/prices.json")) from None
    except ValueError as err:
        raise UserError(Problem(name, "", f"not valid JSON: {err}",
                                "a JSON file like mtgrpo/plan/prices.json")) from None
    if not isinstance(data, dict) or not isinstance(data.get("regions", {}), dict):
        raise UserError(Problem(name, "regions", "missing or not a mapping",
                                "{\"regions\": {\"us-east-1\": {\"ml.g5.2xlarge\": 1.515}}}"))
    return data


@dataclass(frozen=True)
class Cost:
    price_per_hour: float | None  # one instance, on demand
    instance_count: int
    max_run_s: int
    spot: bool
    spot_savings: float
    trials: int = 1  # tuning: max_jobs
    parallel: int = 1  # tuning: max_parallel_jobs

    @property
    def hours(self) -> float:
        return self.max_run_s / 3600

    @property
    def on_demand(self) -> float | None:
        """Upper bound of one job (it runs at most max_run), all instances, on demand."""
        if self.price_per_hour is None:
            return None
        return self.price_per_hour * self.instance_count * self.hours

    @property
    def spot_estimate(self) -> float | None:
        if self.on_demand is None:
            return None
        return self.on_demand * (1 - self.spot_savings)

    @property
    def per_job(self) -> float | None:
        """What the recipe's choice (spot or not) is estimated to cost for one job."""
        return self.spot_estimate if self.spot else self.on_demand

    @property
    def total(self) -> float | None:
        return None if self.per_job is None else self.per_job * self.trials

    @property
    def wall_hours(self) -> float:
        """Longest wall time: trials in waves of max_parallel_jobs, each up to max_run."""
        return math.ceil(self.trials / max(self.parallel, 1)) * self.hours


def cost_of(hardware: Any, max_run_s: int, tuning: Mapping[str, Any] | None,
            prices: PriceTable) -> Cost:
    """The cost bounds of a recipe on ``hardware`` (:class:`mtgrpo.backends.Hardware`): no
    price for hardware its backend does not price (the cluster's own nodes)."""
    price = (prices.price(hardware.region, hardware.price_type) if hardware.price_type
             else None)
    return Cost(price_per_hour=price, instance_count=hardware.nodes, max_run_s=int(max_run_s),
                spot=hardware.spot, spot_savings=prices.spot_savings,
                trials=int(tuning["max_jobs"]) if tuning else 1,
                parallel=int(tuning["max_parallel_jobs"]) if tuning else 1)
