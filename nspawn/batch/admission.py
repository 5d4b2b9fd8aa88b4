"""Admission by resources: a job starts only when the memory limits of the running jobs plus
its own fit in the memory budget, and none of its pinned CPUs is pinned by a running job. A job
that asks for a number of CPUs without naming them is given free ones, so that two such jobs do
not share the same first CPUs.

The budget is what the host had available (MemAvailable) when the batch started, or less when
asked: counting the running jobs' limits against a fresh MemAvailable would count their memory
twice. Jobs without a memory limit reserve nothing (nothing bounds them to reserve).
"""

from __future__ import annotations

from nspawn.batch.jobs import Demand
from nspawn.config.model import Config
from nspawn.hostfacts import allowed_cpus
from nspawn.units import mask_to_cpus, mib_to_bytes, show_mib


def demand_of(config: Config) -> Demand:
    cpus = mask_to_cpus(config.limits.cpu_affinity)
    if cpus and config.limits.cpus_count:
        cpus = cpus[:config.limits.cpus_count]
    return Demand(mib_to_bytes(config.limits.max_ram_mb), cpus, 0 if cpus else config.limits.cpus_count)


class Admission:
    def __init__(self, memory_budget: int | None, cpus: list[int] | None = None, *,
                 budget_from: str = "this host has available for the batch"):
        self.memory_budget = memory_budget  # None: memory is not admitted by
        self.budget_from = budget_from  # where the budget came from, as the refusal says it
        self.memory_reserved = 0
        self.cpus = allowed_cpus() if cpus is None else cpus  # the CPUs jobs may be given
        self.cpus_taken: set[int] = set()

    def never_fits(self, demand: Demand) -> str | None:
        """Why the job could not start even alone, or None."""
        if self.memory_budget is not None and demand.memory_bytes > self.memory_budget:
            return (f"its memory limit of {show_mib(demand.memory_bytes)} exceeds the {show_mib(self.memory_budget)} "
                    f"{self.budget_from}; it can never start")
        if demand.cpu_count > len(self.cpus):
            return (f"it asks for {demand.cpu_count} CPUs and this launcher may use {len(self.cpus)}; "
                    "it can never start")
        return None

    def admit(self, demand: Demand) -> Demand | None:
        """Reserve what the job holds, if it fits now: the demand held (with the CPUs given to a
        job that asked for a count), or None."""
        if self.memory_budget is not None and self.memory_reserved + demand.memory_bytes > self.memory_budget:
            return None
        if self.cpus_taken.intersection(demand.cpus):
            return None
        if demand.cpu_count:
            free = [cpu for cpu in self.cpus if cpu not in self.cpus_taken]
            if len(free) < demand.cpu_count:
                return None
            demand = demand._replace(cpus=tuple(free[:demand.cpu_count]))
        self.memory_reserved += demand.memory_bytes
        self.cpus_taken.update(demand.cpus)
        return demand

    def release(self, demand: Demand) -> None:
        self.memory_reserved -= demand.memory_bytes
        self.cpus_taken.difference_update(demand.cpus)
