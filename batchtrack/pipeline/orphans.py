"""Ray processes left behind by an embedded Ray whose driver died, and ending them.

When the driver of an embedded Ray is killed (SIGKILL, the OOM killer), Ray's GCS and raylet end with it,
but the raylet's two agents (`ray::DashboardAgent`, `ray::RuntimeEnvAgent`) see their raylet die and then
hang reporting it to the dead GCS (Ray 2.60's process_watcher): they outlive the run. The next embedded
run ends them, and only them: a process is ended only when all of these hold, which together prove no
cluster owns it any more:

- it is a Ray process (`ray::…`) of this user, reparented to init: its parent (the raylet) is gone;
- it holds files in a Ray session folder (`…/session_<date>_<pid>`) whose creating process is dead;
- no process of that session that a cluster lives on (raylet, GCS) is still running.

Clusters of other users and live clusters, `ray start` ones included, are never touched.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

_SESSION = re.compile(r"(?P<session>/[^\s]*?/session_\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}_\d+_(?P<pid>\d+))(?:/|$)")
_CLUSTER_PROCESSES = ("raylet", "gcs_server")
_GRACE_SECONDS = 1.0  # the agents hang in a call to the dead GCS: SIGTERM rarely ends them


@dataclass(frozen=True)
class Orphan:
    """A Ray process whose cluster is gone, and the session folder that proves it."""

    pid: int
    name: str
    session: str


def session_of(paths: Iterable[str]) -> tuple[str, int] | None:
    """The Ray session folder among `paths` and the pid of the process that created it, if any.

    >>> session_of(["/x.txt", "/tmp/ray/session_2026-12-02_17-14-12_147149_26375/logs/raylet.out"])
    ('/tmp/ray/session_2026-12-02_17-14-12_147149_26375', 26375)
    """
    for path in paths:
        match = _SESSION.search(path)
        if match:
            return match.group("session"), int(match.group("pid"))
    return None


def _processes() -> Iterator[psutil.Process]:
    yield from psutil.process_iter(["pid", "ppid", "name", "uids", "cmdline"])


def _live_sessions(processes: list[psutil.Process]) -> set[str]:
    """Session folders a raylet or GCS server still runs on (named in their command lines)."""
    live = set()
    for proc in processes:
        cmdline = " ".join(proc.info.get("cmdline") or ())
        if any(name in cmdline for name in _CLUSTER_PROCESSES):
            live.update(m.group("session") for m in _SESSION.finditer(cmdline))
    return live


def find_orphans() -> list[Orphan]:
    """The Ray processes of this user that a dead embedded driver left behind (see the module docstring)."""
    uid = os.getuid()
    processes = list(_processes())
    live = _live_sessions(processes)
    orphans = []
    for proc in processes:
        info = proc.info
        name = info.get("name") or ""
        uids = info.get("uids")
        if info.get("ppid") != 1 or not name.startswith("ray::") or uids is None or uids.real != uid:
            continue
        try:
            session = session_of(f.path for f in proc.open_files())
        except (psutil.Error, OSError):  # gone meanwhile, or not ours to inspect
            continue
        if session is None or session[0] in live or psutil.pid_exists(session[1]):
            continue
        orphans.append(Orphan(proc.pid, name, session[0]))
    return orphans


def end_orphans(orphans: list[Orphan]) -> list[Orphan]:
    """SIGTERM the orphans, SIGKILL those still there after a grace period; the ones that were ended."""
    procs = []
    for orphan in orphans:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(orphan.pid)
            proc.terminate()
            procs.append(proc)
    _, alive = psutil.wait_procs(procs, timeout=_GRACE_SECONDS)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=_GRACE_SECONDS)
    ended = {proc.pid for proc in procs}
    return [o for o in orphans if o.pid in ended]


def describe(ended: list[Orphan]) -> str:
    sessions = sorted({Path(o.session).name for o in ended})
    names = ", ".join(sorted({o.name for o in ended}))
    return f"ended {len(ended)} Ray process(es) ({names}) left by a crashed run of session(s) {', '.join(sessions)}"
