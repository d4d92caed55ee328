"""`bob sweep -x ray --address` against a real Ray cluster: two nodes (`ray start`) on this machine.

A head node and a second node, each a `ray start --block` process with its own temp dir, its own
ports and one CPU (two raylets on one machine is how Ray runs a multi-node cluster locally), and the
cluster's own auth token. Ray binds the machine's address, not loopback: it resolves 127.0.0.1 to
it. The sweep is the real CLI in a subprocess, the way a user points bob at a cluster. The kill test
takes the second node away mid-sweep (its raylet is killed with -9) and checks that every planned
run ends with exactly one ok result. Only processes these tests started are stopped: each node's
process tree, never `ray stop`, which would stop every Ray on the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bob.results import read_result
from tests.sweep_fixtures import ddp_sweep_file

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")  # a Ray dependency
# The cluster tests are `long` (CI leaves them out): a two-node cluster takes ~15 s to start on two
# cores, and the two tests take ~110 s together.

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_env(token: Path) -> dict[str, str]:
    """The environment of the nodes and the driver: no inherited Ray address or settings, this
    cluster's own auth token (Ray's token authentication; the driver must present it too), one torch
    thread per worker, bob from this checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
    }
    return env


@dataclass
class Node:
    """One `ray start --block` process and its temp dir; its raylet, workers and agents are its
    descendants."""

    process: subprocess.Popen
    temp_dir: Path
    log: Path

    def tree(self) -> list:
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def raylet(self):
        return next((p for p in self.tree() if p.name() == "raylet"), None)

    def kill(self) -> None:
        """Kill the node's whole process tree (collected first: orphans are re-parented)."""
        procs = self.tree()
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGKILL)
        psutil.wait_procs(procs, timeout=10)


@dataclass
class Cluster:
    root: Path
    port: int = field(default_factory=free_port)
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.token.write_text(secrets.token_hex(32))
        self.token.chmod(0o600)

    @property
    def token(self) -> Path:
        return self.root / "auth_token"

    @property
    def env(self) -> dict[str, str]:
        return cluster_env(self.token)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start_node(
        self, name: str, head: bool = False, resources: dict[str, float] | None = None, cpus: int = 1
    ) -> Node:
        temp_dir = self.root / name
        temp_dir.mkdir(parents=True)
        cmd = [
            sys.executable, "-m", "ray.scripts.scripts", "start", "--block", f"--num-cpus={cpus}",
            f"--temp-dir={temp_dir}", "--disable-usage-stats",
            "--object-store-memory=100000000", f"--dashboard-agent-listen-port={free_port()}",
            f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
        ]  # fmt: skip
        if head:
            cmd += ["--head", f"--port={self.port}", "--include-dashboard=false"]
        else:
            cmd += [f"--address={self.address}"]
        if resources:
            cmd += [f"--resources={json.dumps(resources)}"]
        log = self.root / f"{name}.log"
        with open(log, "w") as out:
            process = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
        node = Node(process, temp_dir, log)
        self.nodes.append(node)
        return node

    def wait_for_nodes(self, n: int) -> None:
        """Until the cluster reports `n` alive nodes (asked from a throwaway driver process)."""
        probe = (
            "import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
            "print(sum(n['Alive'] for n in ray.nodes()))"
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        alive = ""
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.process.poll() is not None:
                    pytest.fail(f"a Ray node exited at start:\n{node.log.read_text()[-3000:]}")
            done = subprocess.run(
                [sys.executable, "-c", probe, self.address],
                capture_output=True, text=True, env=self.env, timeout=30,
            )  # fmt: skip
            alive = done.stdout.strip().splitlines()[-1:] if done.returncode == 0 else []
            if alive and int(alive[0]) >= n:
                return
            time.sleep(1)
        pytest.fail(f"the Ray cluster did not reach {n} nodes in {START_TIMEOUT_S}s (alive: {alive})")

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.kill()


@contextlib.contextmanager
def two_nodes(second_cpus: int = 1) -> Iterator[Cluster]:
    """A two-node Ray cluster on loopback; its processes are killed whatever the test did. The temp
    dir is short: Ray's unix sockets live under it and their paths may not exceed 107 bytes."""
    root = Path(tempfile.mkdtemp(prefix="bobray-", dir="/tmp"))
    c = Cluster(root)
    try:
        c.start_node("head", head=True)
        c.start_node("second", resources={"second": 1}, cpus=second_cpus)
        c.wait_for_nodes(2)
        yield c
    finally:
        c.stop()
        subprocess.run(["rm", "-rf", str(root)], check=False)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with two_nodes() as c:
        yield c


def sweep_file(path: Path, seeds: int, k: list[int]) -> Path:
    """A sweep of real knn runs on the generated shapes-mini set: `seeds` groups (random weights
    seed the backbone, so each seed extracts its own features) of len(k) runs each."""
    lines = [
        "name: ray-cluster",
        "grids:",
        "  - backbones: [timm/test_resnet]",
        "    weights: [random]",
        f"    seeds: {list(range(seeds))}",
        "    tasks:",
        f"      - {{task: knn/shapes-mini, grid: {{k: {k}}}}}",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def bob_sweep(file: Path, results: Path, *flags: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`bob sweep FILE` in a subprocess, on CPU, results and cache under `results`' parent."""
    cmd = [sys.executable, "-m", "bob.cli", "sweep", str(file), "--results-dir", str(results)]
    cmd += ["--cache-dir", str(results.parent / "cache"), "--device", "cpu", "--num-workers", "0", "--quiet"]
    return subprocess.run([*cmd, *flags], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


def result_files(results: Path) -> dict[str, list]:
    """Every result JSON under `results`, by run id (more than one file for an id is a duplicate)."""
    out: dict[str, list] = {}
    for path in results.rglob("*.json"):
        if path.name.endswith(".lock"):
            continue
        r = read_result(path)
        out.setdefault(r.id, []).append(r)
    return out


def planned_ids(file: Path) -> set[str]:
    from bob.api import sweep_plan

    return {s.id for s in sweep_plan(file).specs()}


@pytest.mark.long
def test_a_sweep_on_a_two_node_ray_cluster_completes(cluster, tmp_path):
    file = sweep_file(tmp_path / "sweep.yaml", seeds=2, k=[5, 10])
    start = time.perf_counter()
    done = bob_sweep(
        file, tmp_path / "ray" / "raw", "--executor", "ray", "--address", cluster.address, env=cluster.env
    )
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stdout + done.stderr
    results = result_files(tmp_path / "ray" / "raw")
    assert set(results) == planned_ids(file)
    assert all(len(rs) == 1 and rs[0].ok for rs in results.values())
    # The same sweep on the local executor gives the same metrics, run by run.
    assert bob_sweep(file, tmp_path / "local" / "raw", env=cluster.env).returncode == 0
    local = result_files(tmp_path / "local" / "raw")
    assert {i: rs[0].metrics for i, rs in results.items()} == {i: rs[0].metrics for i, rs in local.items()}
    print(f"ray cluster sweep: {len(results)} runs ok in {seconds:.1f}s")


def test_an_address_nothing_listens_on_exits_2_at_once_and_writes_nothing(tmp_path, capsys):
    from tests.cli_harness import invoke

    file = sweep_file(tmp_path / "sweep.yaml", seeds=1, k=[5])
    results = tmp_path / "raw"
    start = time.perf_counter()
    code, out = invoke(
        [
            "sweep",
            str(file),
            "-x",
            "ray",
            "--address",
            f"127.0.0.1:{free_port()}",
            "--results-dir",
            str(results),
        ],
        capsys,
    )
    assert code == 2 and "Cannot reach the Ray cluster at 127.0.0.1:" in out, out
    assert time.perf_counter() - start < 30 and not results.exists()


DRIVER = """
import json, sys
from pathlib import Path
from bob.sweep.executors.ray import RayExecutor
from tests.sweep_fixtures import fake_suite, run_fake
with fake_suite():
    summary = run_fake(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]), RayExecutor(address=sys.argv[3]))
print(json.dumps(summary.counts))
"""


def executions(log: Path) -> list[tuple[int, int]]:
    """(seed, worker pid) per execution the fake suite logged."""
    if not log.exists():
        return []
    return [tuple(map(int, line.split())) for line in log.read_text().splitlines() if line.strip()]


@pytest.mark.long
def test_losing_a_node_mid_sweep_loses_and_duplicates_no_run(cluster, tmp_path):
    """Runs of a few seconds each; once one runs on the second node, that node's raylet is killed.
    Ray re-runs the dead node's groups on the head; every planned run ends with one ok result."""
    from tests.sweep_fixtures import fake_suite, fake_sweep

    runs, log = 6, tmp_path / "executions.txt"
    data = fake_sweep(runs, behaviour="sleep", seconds=4.0, log=str(log))
    (tmp_path / "sweep.json").write_text(json.dumps(data))
    results = tmp_path / "raw"
    second = cluster.nodes[1]
    start = time.perf_counter()
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(tmp_path / "sweep.json"), str(results), cluster.address],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cluster.env, cwd=REPO,
    )  # fmt: skip
    try:
        on_second: list[tuple[int, int]] = []
        deadline = time.monotonic() + 120
        while not on_second and time.monotonic() < deadline and driver.poll() is None:
            pids = {p.pid for p in second.tree()}
            on_second = [e for e in executions(log) if e[1] in pids]
            time.sleep(0.2)
        assert on_second, "no run started on the second node"
        raylet = second.raylet()
        assert raylet is not None
        raylet.send_signal(signal.SIGKILL)
        out, err = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
    seconds = time.perf_counter() - start
    assert driver.returncode == 0, out + err
    counts = json.loads(out.strip().splitlines()[-1])
    with fake_suite():
        from bob.sweep.driver import plan_sweep
        from bob.sweep.spec import parse_sweep

        planned = {s.id for s in plan_sweep(parse_sweep(data)).specs()}
    stored = result_files(results)
    executed = executions(log)
    duplicated = [i for i, rs in stored.items() if len(rs) > 1]
    lost = planned - {i for i, rs in stored.items() if all(r.ok for r in rs)}
    print(
        f"node loss: planned {len(planned)} · completed {counts.get('ok', 0)} · lost {len(lost)} · "
        f"duplicated {len(duplicated)} · executions {len(executed)} (re-run after the loss: "
        f"{len(executed) - len(planned)}) · {seconds:.1f}s"
    )
    assert set(stored) == planned and not duplicated and not lost
    assert counts.get("ok") == runs and not counts.get("lost") and not counts.get("failed")
    # The run the second node was executing when it died ran again elsewhere.
    assert len(executed) > len(planned)
    assert {seed for seed, _ in executed} == set(range(runs))


@pytest.mark.long
def test_a_data_parallel_run_is_placed_as_one_gang(tmp_path):
    """`--ranks-per-run 2`: the fine-tuning run needs 2 CPUs on one node (a placement group of one
    STRICT_PACK bundle), which only the second node has (the head has 1), and the elastic launcher
    starts both ranks inside it; the knn run beside it keeps one process. The head alone could never
    place the gang, so an ok 2-rank result means the gang was placed whole, then released."""
    file = ddp_sweep_file(tmp_path / "sweep.yaml", "ray-gang")
    with two_nodes(second_cpus=2) as c:
        start = time.perf_counter()
        done = bob_sweep(
            file, tmp_path / "raw", "-x", "ray", "--address", c.address, "--ranks-per-run", "2", env=c.env
        )
        seconds = time.perf_counter() - start
        assert done.returncode == 0, done.stdout + done.stderr
        probe = (
            "import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
            "from ray.util import placement_group_table as t; "
            "print(sum(g['state'] != 'REMOVED' for g in t().values()))"
        )
        left = subprocess.run(
            [sys.executable, "-c", probe, c.address], capture_output=True, text=True, env=c.env, timeout=60
        )
        assert left.stdout.strip().splitlines()[-1] == "0", left.stdout + left.stderr  # released
    results = {rs[0].task["name"]: rs for rs in result_files(tmp_path / "raw").values()}
    (ft,), (knn,) = results["finetune/shapes-mini"], results["knn/shapes-mini"]
    assert ft.ok and knn.ok
    assert ft.protocol["data_parallel"]["world_size"] == 2
    assert "data_parallel" not in knn.protocol
    print(f"ray gang sweep: 2 runs ok (one on 2 ranks) in {seconds:.1f}s")
