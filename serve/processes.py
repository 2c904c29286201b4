"""The tritonserver process tree as seen from /proc: its python-backend stubs and their memory.

    stubs = find_stubs(server_pid)          # {pid: Stub(pid, instance="topk_0_0", state="S")}
    dead = crashed_stubs(stubs)             # the ones that died since
    rss = tree_rss_bytes(server_pid)        # tritonserver + every stub, resident bytes

Why this exists: when a python-backend stub dies (OOM-killed, kill -9, a segfault in
onnxruntime), Triton 2.51 neither restarts it nor marks anything unready. /v2/health/ready
and the model's ready endpoint keep answering 200 while every request to that model fails
with "Stub process '<instance>_0_0' is not healthy". The stub is left as a zombie child of
tritonserver, which is what :func:`crashed_stubs` looks for. Linux only (reads /proc).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STUB_BINARY = "triton_python_backend_stub"
PROC = Path("/proc")


@dataclass(frozen=True)
class Stub:
    pid: int
    instance: str     # Triton's model instance name, e.g. "feature_lookup_0_0"
    model_file: str   # the model.py / model.onnx the stub runs


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:  # the process went away between listing and reading
        return None


def process_state(pid: int, proc: Path = PROC) -> str | None:
    """The one-letter state from /proc/<pid>/stat ("R", "S", "Z" ...), None when gone."""
    stat = _read(proc / str(pid) / "stat")
    if stat is None:
        return None
    # the command name in parentheses may hold spaces; the state follows the last ')'
    return stat.rsplit(")", 1)[1].split()[0]


def parent_pid(pid: int, proc: Path = PROC) -> int | None:
    stat = _read(proc / str(pid) / "stat")
    return None if stat is None else int(stat.rsplit(")", 1)[1].split()[1])


def children(pid: int, proc: Path = PROC) -> list[int]:
    found = []
    for entry in proc.iterdir():
        if entry.name.isdigit() and parent_pid(int(entry.name), proc) == pid:
            found.append(int(entry.name))
    return sorted(found)


def parse_stub_cmdline(raw: bytes) -> tuple[str, str] | None:
    """(instance name, model file) from a stub's NUL-separated argv; None for other programs.

    The stub's argv (python backend r24.10): stub, model file, shm region, shm sizes (2),
    parent pid, backend folder, ipc handle, instance name, runtime model dir.
    """
    argv = [part.decode(errors="replace") for part in raw.split(b"\0") if part]
    if not argv or not argv[0].endswith(STUB_BINARY) or len(argv) < 9:
        return None
    return argv[8], argv[1]


def find_stubs(server_pid: int, proc: Path = PROC) -> dict[int, Stub]:
    """The live python-backend stubs that ``server_pid`` started, by pid."""
    stubs = {}
    for pid in children(server_pid, proc):
        try:
            raw = (proc / str(pid) / "cmdline").read_bytes()
        except OSError:
            continue
        parsed = parse_stub_cmdline(raw)
        if parsed is not None and process_state(pid, proc) not in (None, "Z"):
            stubs[pid] = Stub(pid, *parsed)
    return stubs


def crashed_stubs(stubs: dict[int, Stub], proc: Path = PROC) -> list[Stub]:
    """The stubs of ``stubs`` left as zombies: they died and tritonserver did not reap them.

    A stub Triton stops itself (a model unload or reload in poll / explicit mode) is waited
    for and disappears; only an unexpected death leaves the zombie behind.
    """
    return [stub for pid, stub in stubs.items() if process_state(pid, proc) == "Z"]


def rss_bytes(pid: int, proc: Path = PROC) -> int:
    """Resident set size of one process (0 when it is gone or a zombie)."""
    status = _read(proc / str(pid) / "status") or ""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def tree_rss_bytes(server_pid: int, proc: Path = PROC) -> int:
    """tritonserver's RSS plus that of every process it started (the python stubs)."""
    return rss_bytes(server_pid, proc) + sum(rss_bytes(pid, proc) for pid in children(server_pid, proc))
