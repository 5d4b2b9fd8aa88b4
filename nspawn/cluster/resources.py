"""A job's needs as Dask resources, and what a worker offers: the one mapping between the
batch's Demand and Dask's resource names. Every job holds at least one CPU (the worker pins it
to CPUs of its own), so a worker never runs more jobs at once than it offers CPUs."""

from __future__ import annotations

from nspawn.batch.admission import Admission
from nspawn.batch.jobs import Demand
from nspawn.units import show_mib

MEMORY, CPUS = "nspawn-memory", "nspawn-cpus"  # a worker offers both; a plain dask worker neither


def cpus_needed(demand: Demand) -> int:
    return len(demand.cpus) or demand.cpu_count or 1


def needs(demand: Demand) -> dict[str, float]:
    return {MEMORY: demand.memory_bytes, CPUS: cpus_needed(demand)}


def offer(memory_bytes: int, cpus: int) -> dict[str, float]:
    return {MEMORY: memory_bytes, CPUS: cpus}


class ClusterAdmission:
    """The batch's admission against a cluster: a job no worker could hold even alone fails at
    once; the rest are all admitted here, and Dask starts each on a worker when its resources
    are free there (the worker gives it concrete CPUs: nspawn.cluster.task)."""

    def __init__(self, workers: dict[str, dict]):
        self.offers = {address: offered for address, offered in workers.items() if MEMORY in offered and CPUS in offered}

    @property
    def cpus(self) -> int:
        return int(sum(offered[CPUS] for offered in self.offers.values()))

    def never_fits(self, demand: Demand) -> str | None:
        if not self.offers:
            return "no nspawn worker is connected to the scheduler"
        asked = Demand(demand.memory_bytes, (), cpus_needed(demand))
        if all(Admission(int(offered[MEMORY]), list(range(int(offered[CPUS])))).never_fits(asked) for offered in self.offers.values()):
            largest = max(self.offers.values(), key=lambda o: (o[MEMORY], o[CPUS]))
            return (f"no worker of the cluster can hold it ({show_mib(demand.memory_bytes)}, {asked.cpu_count} CPUs; the "
                    f"largest offers {show_mib(int(largest[MEMORY]))} and {int(largest[CPUS])} CPUs); it can never start")
        return None

    def admit(self, demand: Demand) -> Demand:
        return demand

    def release(self, demand: Demand) -> None:
        pass
