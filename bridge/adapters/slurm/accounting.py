"""Slurm accounts, associations and their limits (sacctmgr), the HPC side of projects and quotas.

`sacctmgr -i add` of something that exists exits 1, so each `ensure_*` looks first and adds only what
is missing; limits are set with `modify`, which is idempotent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from bridge.adapters.runner import CommandRunner
from bridge.domain.quotas import NONE, AssocLimits
from bridge.errors import SlurmError

UNLIMITED = -1  # sacctmgr clears a limit with -1


class SlurmAccounting(Protocol):
    async def account_exists(self, account: str) -> bool: ...

    async def ensure_account(self, account: str, *, description: str = "", parent: str | None = None) -> None: ...

    async def ensure_association(self, user: str, account: str) -> None: ...

    async def set_account_limits(
        self, account: str, *, grp_tres: Mapping[str, int] | None = None, grp_jobs: int | None = None,
        max_jobs: int | None = None,
    ) -> None: ...

    async def account_limits(self, account: str) -> dict[str, str]: ...

    async def associations(self) -> dict[tuple[str, str], AssocLimits]:
        """Every association of the cluster, (account, user) to its limits; user "" is the account's own."""
        ...

    async def set_limits(self, account: str, user: str | None, limits: AssocLimits) -> None:
        """State an association's limits (the account's own when `user` is None), clearing what they leave out."""
        ...


class CliSlurmAccounting:
    def __init__(self, runner: CommandRunner, *, cluster: str, bin_dir: str = "", timeout_s: float = 60.0) -> None:
        self.runner, self.cluster, self.timeout_s = runner, cluster, timeout_s
        self.sacctmgr = f"{bin_dir.rstrip('/')}/sacctmgr" if bin_dir else "sacctmgr"

    async def _run(self, *args: str) -> str:
        done = await self.runner.run([self.sacctmgr, *args], timeout_s=self.timeout_s)
        if not done.ok:
            raise SlurmError(f"sacctmgr {args[0]} failed (rc={done.rc}): {(done.stderr or done.stdout).strip()[:400]}")
        return done.stdout

    async def account_exists(self, account: str) -> bool:
        out = await self._run("-n", "-P", "show", "account", f"name={account}", "format=account")
        return account in out.split()

    async def ensure_account(self, account: str, *, description: str = "", parent: str | None = None) -> None:
        if await self.account_exists(account):
            return
        args = ["-i", "add", "account", account, f"cluster={self.cluster}"]
        if description:
            args.append(f"description={description}")
        if parent:
            args.append(f"parent={parent}")
        await self._run(*args)

    async def ensure_association(self, user: str, account: str) -> None:
        out = await self._run("-n", "-P", "show", "assoc", f"users={user}", f"accounts={account}",
                              f"cluster={self.cluster}", "format=user,account")
        if f"{user}|{account}" in out.split():
            return
        await self._run("-i", "add", "user", user, f"account={account}", f"cluster={self.cluster}")

    async def set_account_limits(
        self, account: str, *, grp_tres: Mapping[str, int] | None = None, grp_jobs: int | None = None,
        max_jobs: int | None = None,
    ) -> None:
        sets = []
        if grp_tres is not None:
            sets.append("GrpTRES=" + (",".join(f"{k}={v}" for k, v in grp_tres.items()) or "cpu=-1"))
        if grp_jobs is not None:
            sets.append(f"GrpJobs={grp_jobs}")
        if max_jobs is not None:
            sets.append(f"MaxJobs={max_jobs}")
        if sets:
            await self._run("-i", "modify", "account", "where", f"name={account}", f"cluster={self.cluster}",
                            "set", *sets)

    async def account_limits(self, account: str) -> dict[str, str]:
        out = await self._run("-n", "-P", "show", "assoc", f"accounts={account}", "users=",
                              f"cluster={self.cluster}", "format=account,grptres,grpjobs,maxjobs")
        for line in out.splitlines():
            parts = line.split("|")
            if parts and parts[0] == account:
                return {"GrpTRES": parts[1], "GrpJobs": parts[2], "MaxJobs": parts[3]}
        return {}

    async def associations(self) -> dict[tuple[str, str], AssocLimits]:
        # JSON: the text form rounds memory ("mem=1.46G"), which cannot be compared with what was set
        data = json.loads(await self._run("--json", "show", "assoc", f"cluster={self.cluster}"))
        return {(a.get("account") or "", a.get("user") or ""): assoc_limits(a) for a in data.get("associations", [])}

    async def set_limits(self, account: str, user: str | None, limits: AssocLimits) -> None:
        where = ["where", f"name={user}", f"account={account}"] if user else ["where", f"name={account}"]
        await self._run("-i", "modify", "user" if user else "account", *where, f"cluster={self.cluster}",
                        "set", *limits.sacctmgr_sets())


def _number(value: Any) -> int:
    """A data_parser number ({"set", "infinite", "number"}) as an int, NONE when unset or infinite."""
    if isinstance(value, dict):
        return int(value["number"]) if value.get("set") and not value.get("infinite") else NONE
    return NONE if value is None else int(value)


def assoc_limits(assoc: Mapping[str, Any]) -> AssocLimits:
    """The limits of one association of `sacctmgr --json show assoc` (Slurm 24.11, data_parser v0.0.42:
    GrpTRES is max.tres.total, MaxJobs max.jobs.active, MaxWall max.jobs.per.wall_clock in minutes)."""
    top = assoc.get("max") or {}
    jobs = top.get("jobs") or {}
    tres = {(t["type"] if not t.get("name") else f"{t['type']}/{t['name']}"): int(t["count"])
            for t in (top.get("tres") or {}).get("total") or []}
    return AssocLimits(grp_tres=tres, max_jobs=_number(jobs.get("active")),
                       max_wall_min=_number((jobs.get("per") or {}).get("wall_clock")))
