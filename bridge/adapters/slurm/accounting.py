"""Slurm accounts, associations and their limits (sacctmgr), the HPC side of projects and quotas.

`sacctmgr -i add` of something that exists exits 1, so each `ensure_*` looks first and adds only what
is missing; limits are set with `modify`, which is idempotent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from bridge.adapters.runner import CommandRunner
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
