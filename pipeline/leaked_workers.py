"""Give back the CPUs (GPUs) of Ray Train worker groups whose fit was killed: what jobs.tune needs.

ASHA stops a trial by ending its Tune actor, and with it the Ray Train controller of the trial's fit.
The worker group's placement group outlives them: it belongs to the job's driver, and only Ray Train's
PlacementGroupCleaner (ray-project/ray#54305) removes it, by asking the State API whether the
controller is alive. Without the dashboard that API does not exist (the local session used to start
none: a 30-minute search on 2 CPUs ran 6 trials, then its trials waited for CPUs for 20 minutes), and
with it the cleaner still left the group in place when the trial actor was killed outright (Ray 2.60;
tests/integration/test_cluster.py). The CPUs then stay reserved for good and the next worker groups
never start. pipeline.cluster starts the dashboard; this finds the groups the cleaner missed through
the same State API and removes them (jobs.tune checks every few seconds through `tune_callback` and
`drain`s after its search).

A placement group counts as leaked when it reserves CPUs or GPUs in every bundle (a Train worker
group; Tune's own trial groups reserve only memory here), no live actor is placed in it, and both
were still true when it was first seen this way a grace period ago: a fit that is starting places
its workers within moments of its group being ready.
"""

from __future__ import annotations

import logging
import time

import ray

log = logging.getLogger(__name__)


def worker_groups() -> tuple[set[str], set[str]]:
    """(CREATED placement groups that reserve CPUs/GPUs in every bundle, the ones of them holding no live
    actor), as IDs."""
    from ray.util.state import list_actors, list_placement_groups

    # This session's cluster by its GCS address: with no address the State API looks for "the" Ray
    # instance on the machine and refuses when there are several (two jobs, a test's cluster).
    query = {"address": ray.get_runtime_context().gcs_address, "limit": 10_000, "detail": True}
    live = list_actors(filters=[("state", "!=", "DEAD")], raise_on_missing_output=False, **query)
    used = {a.placement_group_id for a in live if a.placement_group_id}
    groups = list_placement_groups(filters=[("state", "=", "CREATED")], raise_on_missing_output=False, **query)
    reserving = set()
    for pg in groups:
        bundles = [b.get("unit_resources", {}) for b in pg.bundles or []]
        if bundles and all(r.get("CPU", 0) > 0 or r.get("GPU", 0) > 0 for r in bundles):
            reserving.add(pg.placement_group_id)
    return reserving, reserving - used


def remove(group_ids: set[str]) -> None:
    from ray.util.placement_group import PlacementGroup

    for group_id in group_ids:
        ray.util.remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(group_id))))
        log.warning("removed placement group %s: its Ray Train worker group was gone", group_id)


class LeakedWorkerGroups:
    """Removes worker groups that stayed unused for `grace_s`; call `check()` as often as convenient."""

    def __init__(self, grace_s: float = 10.0):
        self.grace_s = grace_s
        self._first_seen: dict[str, float] = {}
        self.removed: set[str] = set()

    def check(self) -> set[str]:
        """Remove the groups unused since at least grace_s ago. Returns the groups still reserving."""
        now = time.monotonic()
        reserving, unused = worker_groups()
        self._first_seen = {g: self._first_seen.get(g, now) for g in unused}
        due = {g for g, t in self._first_seen.items() if now - t >= self.grace_s}
        remove(due)
        self.removed |= due
        return reserving - due

    def checked(self, check) -> None:
        """Run `check` (self.check or self.drain); a cluster without the State API (no dashboard) only
        loses this fix, with a warning."""
        try:
            check()
        except Exception as e:  # the State API is an HTTP service: it may be absent or slow
            log.warning("could not check for leaked Ray Train worker groups: %s", e)

    def tune_callback(self, every_s: float = 5.0):
        """A Ray Tune callback that checks every `every_s` seconds of a search."""
        from ray.tune import Callback

        leaks = self

        class ReleaseLeakedWorkers(Callback):
            last = 0.0

            def on_step_begin(self, iteration, trials, **info):
                if time.monotonic() - self.last >= every_s:
                    self.last = time.monotonic()
                    leaks.checked(leaks.check)

        return ReleaseLeakedWorkers()

    def drain(self, timeout_s: float = 60.0) -> None:
        """After the last fit of this search: check until no worker group is left, or only ones in use
        (another job's fits) after a settling time, or timeout_s passed."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            reserving = self.check()
            if not reserving or (not self._first_seen and time.monotonic() - start > self.grace_s + 5):
                return
            time.sleep(1.0)
