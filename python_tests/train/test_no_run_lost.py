"""No run is ever lost (issue 20): the same command twice continues the run, other options are refused, nothing
is removed without --overwrite; SIGTERM and Ctrl-C stop after the iteration with a checkpoint and a distinct exit
status; a kill during a checkpoint write keeps the previous one; under torchrun --max-restarts a SIGKILLed worker
leads to a restarted group that continues from the last checkpoint and ends with the models of an uninterrupted
run, bit for bit (CPU, gloo), one metrics line per iteration -- with --standalone and with two c10d nodes."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist

from wgan_ext.train import ConfigError, Trainer, TrainConfig, load_checkpoint, main, resolve
from wgan_ext.train import config as cfgmod
from wgan_ext.train.distributed import fresh_namespace

from conftest import states_equal

# small, constant learning rate (a linear decay depends on --iters, which these tests change on continuing)
ARGS = ["--device", "cpu", "--lipschitz", "gp", "--hidden", "32", "--batch-size", "32", "--n-critic", "2",
        "--lr-decay", "none", "--no-plots", "--no-tensorboard", "--no-progress"]


def metrics(run):
    with open(os.path.join(run, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def values(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def models(run):
    s = load_checkpoint(str(run))
    return s["iteration"], {"generator": s["generator"], "critic": s["critic"], "opt_d": s["opt_d"]}


def snapshot(run):
    """Every byte of a run folder."""
    out = {}
    for root, _, files in os.walk(run):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                out[os.path.relpath(os.path.join(root, name), run)] = f.read()
    return out


# --------------------------------------------------------------------------------------- the same command twice
def test_the_same_command_twice_continues_the_run(tmp_path, capsys):
    run = str(tmp_path / "R")
    assert main([*ARGS, "--iters", "4", "--out", run]) == 0
    assert main([*ARGS, "--iters", "4", "--out", run]) == 0  # finished: nothing lost, nothing to do
    assert [r["iteration"] for r in metrics(run)] == [1, 2, 3, 4]
    assert main([*ARGS, "--iters", "7", "--out", run]) == 0  # --iters may grow: continues at 4
    assert "continuing at 4" in capsys.readouterr().err
    ref = str(tmp_path / "ref")
    assert main([*ARGS, "--iters", "7", "--out", ref]) == 0
    assert values(metrics(run)) == values(metrics(ref))
    assert states_equal(models(run), models(ref))


@pytest.mark.parametrize("change, named", [(["--iters", "3"], "past --iters 3"),
                                           (["--iters", "5", "--lr-d", "2e-4"], "--lr-d 0.0003 there, 0.0002 now"),
                                           (["--iters", "5", "--lipschitz", "clip"], "--lipschitz 'gp' there")])
def test_other_options_are_refused_and_nothing_changes(tmp_path, capsys, change, named):
    run = str(tmp_path / "R")
    assert main([*ARGS, "--iters", "4", "--out", run]) == 0
    before = snapshot(run)
    capsys.readouterr()
    assert main([*ARGS, *change, "--out", run]) == 2  # a flag given twice: the last counts
    err = capsys.readouterr().err
    assert f"--out {run} already holds a run (checkpoint at iteration 4)" in err and named in err
    assert "--resume" in err and "another --out" in err and "--overwrite" in err
    assert snapshot(run) == before


def test_overwrite_starts_afresh_but_not_on_an_elastic_restart(tmp_path, monkeypatch, capsys):
    run = str(tmp_path / "R")
    assert main([*ARGS, "--iters", "4", "--out", run]) == 0
    assert main([*ARGS, "--iters", "2", "--seed", "3", "--out", run, "--overwrite"]) == 0
    assert [r["iteration"] for r in metrics(run)] == [1, 2]
    assert json.load(open(os.path.join(run, "config.json")))["seed"] == 3
    # the same job restarted by torchrun: the first start replaced the run, the restart continues it
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert main([*ARGS, "--iters", "3", "--seed", "3", "--out", run, "--overwrite"]) == 0
    assert [r["iteration"] for r in metrics(run)] == [1, 2, 3]
    assert "continuing at 2" in capsys.readouterr().err
    capsys.readouterr()
    assert main([*ARGS, "--out", run, "--overwrite", "--resume", run]) == 2  # not both
    assert "--overwrite starts a run afresh and --resume continues one" in capsys.readouterr().err


def test_a_folder_with_metrics_but_no_checkpoint_starts_again(tmp_path):
    run = tmp_path / "R"
    assert main([*ARGS, "--iters", "3", "--checkpoint-every", "100", "--checkpoint-minutes", "0",
                 "--out", str(run)]) == 0
    ref = values(metrics(run))
    os.unlink(run / "checkpoints" / "last.pt")  # as if killed before its first checkpoint
    assert main([*ARGS, "--iters", "3", "--out", str(run)]) == 0
    assert values(metrics(run)) == ref  # the same lines again, not appended


def test_the_python_api_refuses_to_clobber(tmp_path):
    c = resolve(TrainConfig(dataset="8gaussians", iters=2, batch_size=16, hidden=16, n_critic=1, out=str(tmp_path),
                            progress=False, tensorboard=False, plots=False))
    Trainer(c).train()
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError, match="already holds a run.*resume_state=load_checkpoint.*overwrite=True"):
        Trainer(c)
    assert snapshot(tmp_path) == before
    Trainer(c, overwrite=True).train()
    Trainer(c, resume_state=load_checkpoint(str(tmp_path)))  # continuing is fine


def test_default_run_folder_under_torchrun_is_the_jobs(monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job/42")
    assert resolve(TrainConfig()).out == os.path.join("runs", "8gaussians-gp-job_42")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")  # torchrun's default id: the time, as without torchrun
    assert resolve(TrainConfig()).out.startswith(os.path.join("runs", "8gaussians-gp-2"))


@pytest.mark.parametrize("log_every, saves", [(1, [1, 2, 3, 4]), (2, [2, 4])])
def test_checkpoint_minutes_writes_by_time(tmp_path, monkeypatch, log_every, saves):
    c = resolve(TrainConfig(dataset="8gaussians", iters=4, batch_size=16, hidden=16, n_critic=1, out=str(tmp_path),
                            progress=False, tensorboard=False, plots=False, checkpoint_every=100,
                            checkpoint_minutes=1e-9, log_every=log_every))
    t = Trainer(c)
    saved = []
    real = t.save
    monkeypatch.setattr(t, "save", lambda: saved.append(t.iteration) or real())
    t.train()
    assert saved == saves  # when overdue, at the end of each block of --log-every iterations
    assert "checkpoint_minutes" in cfgmod.RESUMABLE
    with pytest.raises(ConfigError, match="--checkpoint-minutes"):
        resolve(TrainConfig(checkpoint_minutes=-1))


# --------------------------------------------------------------------------------------- processes: helpers
def env():
    e = {**os.environ, "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RESTART_COUNT",
              "TORCHELASTIC_RUN_ID"):
        e.pop(k, None)
    return e


def wait_lines(run, n, procs, timeout=120):
    """Wait until metrics.jsonl has at least n complete lines; fail if the processes ended first."""
    path = os.path.join(run, "metrics.jsonl")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                lines = sum(1 for line in f if line.endswith("\n"))
        except FileNotFoundError:
            lines = 0
        if lines >= n:
            return lines
        if all(p.poll() is not None for p in procs):
            out = [p.communicate() for p in procs]
            pytest.fail(f"the run ended before {n} metrics lines: {out}")
        time.sleep(0.01)
    pytest.fail(f"no {n} metrics lines within {timeout} s")


def children(pid):
    """The processes whose parent is `pid` (torchrun's workers are its agent's children)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return sorted(out)


def finish(proc, timeout=240):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


# --------------------------------------------------------------------------------------- signals, one process
@pytest.mark.parametrize("sig, status, name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "SIGINT")])
def test_a_signal_stops_with_a_checkpoint_and_the_run_continues(tmp_path, sig, status, name):
    run = str(tmp_path / "R")
    cmd = [sys.executable, "-m", "wgan_ext.train", *ARGS, "--checkpoint-every", "1000", "--out", run]
    p = subprocess.Popen([*cmd, "--iters", "100000"], env=env(), cwd=tmp_path, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    wait_lines(run, 10, [p])
    p.send_signal(sig)
    code, err = finish(p)
    assert code == status, err
    it, _ = models(run)  # the checkpoint of the iteration it stopped after, although checkpoint-every is 1000
    assert f"{name} received: stopped after generator iteration {it}; checkpoint" in err
    assert "The same command continues the run" in err
    assert [r["iteration"] for r in metrics(run)] == list(range(1, it + 1))
    # the same command (with the total it should reach) continues it, to the models of an uninterrupted run
    total = it + 5
    r = subprocess.run([*cmd, "--iters", str(total)], env=env(), cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0 and f"continuing at {it}" in r.stderr, r.stderr
    ref = str(tmp_path / "ref")
    assert main([*ARGS, "--checkpoint-every", "1000", "--iters", str(total), "--out", ref]) == 0
    assert values(metrics(run)) == values(metrics(ref))
    assert states_equal(models(run), models(ref))


KILL_DURING_WRITE = """
import os, signal, sys
import torch
import wgan_ext.train.checkpoint as ck
from wgan_ext.train import main

where, saves = sys.argv[1], []
real_save, real_replace = torch.save, os.replace

def save(obj, f):  # the second checkpoint write: killed {where}
    saves.append(1)
    if len(saves) == 2 and where == "mid-write":
        f.write(b"PK\\x03\\x04 half a checkpoint")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f)

def replace(src, dst):
    if len(saves) == 2 and where == "before-rename" and dst.endswith("last.pt"):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst)

ck.torch.save, ck.os.replace = save, replace
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("where", ["mid-write", "before-rename"])
def test_a_kill_during_a_checkpoint_write_keeps_the_previous_one(tmp_path, where):
    run = str(tmp_path / "R")
    args = [*ARGS, "--iters", "12", "--checkpoint-every", "5", "--out", run]
    r = subprocess.run([sys.executable, "-c", KILL_DURING_WRITE, where, *args], env=env(), cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == -signal.SIGKILL, r.stderr
    folder = os.path.join(run, "checkpoints")
    assert any(n.startswith(".tmp-") for n in os.listdir(folder))  # the cut-off write
    assert load_checkpoint(run)["iteration"] == 5  # the previous checkpoint, whole
    r = subprocess.run([sys.executable, "-m", "wgan_ext.train", *args], env=env(), cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 0 and "continuing at 5" in r.stderr, r.stderr
    assert os.listdir(folder) == ["last.pt"]
    ref = str(tmp_path / "ref")
    assert main([*args[:-1], ref]) == 0
    assert values(metrics(run)) == values(metrics(ref))
    assert states_equal(models(run), models(ref))


# --------------------------------------------------------------------------------------- the group's namespace
def test_fresh_namespace_ignores_a_previous_groups_keys():
    server = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    server.set("generation", "old")  # what a killed group left: its generation, a join and its acknowledgement
    server.set("old/join/1", "stale-token")
    server.set("ack/stale-token", "old")
    got, errors = {}, []

    def rank(r, delay):
        try:
            time.sleep(delay)
            store = dist.TCPStore("127.0.0.1", server.port, is_master=False)
            got[r] = fresh_namespace(store, r, 3, timedelta(seconds=30))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    # ranks 1 and 2 come first and read the stale generation; rank 0 publishes a fresh one later
    threads = [threading.Thread(target=rank, args=(r, d)) for r, d in ((1, 0.0), (2, 0.2), (0, 1.5))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(got) == 3
    assert got[0] == got[1] == got[2] != "old"


def test_fresh_namespace_without_a_rank_0_times_out():
    server = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    server.set("generation", "old")
    with pytest.raises(dist.DistStoreError):
        fresh_namespace(server, 1, 2, timedelta(seconds=2))


# --------------------------------------------------------------------------------------- torchrun
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
DIST_ARGS = [*ARGS, "--iters", "150", "--checkpoint-every", "10"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The 2-process run the interrupted ones must end with."""
    root = tmp_path_factory.mktemp("uninterrupted")
    run = str(root / "R")
    r = subprocess.run([*TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "wgan_ext.train", *DIST_ARGS,
                        "--out", run], env=env(), cwd=root, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    return values(metrics(run)), models(run)


def check_same_run(run, uninterrupted):
    rows, state = uninterrupted
    assert values(metrics(run)) == rows  # one line per iteration, the same values
    assert states_equal(models(run), state)


def kill_a_worker(agent, run, lines):
    seen = wait_lines(run, lines, [agent])
    assert seen < 150, "the run finished before the kill"
    workers = children(agent.pid)
    assert workers, "no worker processes"
    os.kill(workers[-1], signal.SIGKILL)


def test_elastic_restarts_continue_from_the_last_checkpoint(tmp_path, uninterrupted):
    run = str(tmp_path / "R")
    agent = subprocess.Popen([*TORCHRUN, "--standalone", "--nproc_per_node", "2", "--max-restarts", "2",
                              "-m", "wgan_ext.train", *DIST_ARGS, "--out", run], env=env(), cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kill_a_worker(agent, run, 25)
    time.sleep(0.5)
    kill_a_worker(agent, run, 65)  # lines from before the first kill's checkpoint are rewritten: > 65 is new
    code, err = finish(agent)
    assert code == 0, err
    assert "Connection refused" not in err  # every restart came up at its first try
    assert err.count("(continuing at ") == 2 and "wgan-train: done" in err
    check_same_run(run, uninterrupted)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_elastic_restart_with_two_c10d_nodes(tmp_path, uninterrupted):
    run = str(tmp_path / "R")
    node = [*TORCHRUN, "--nnodes", "2", "--nproc_per_node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint",
            f"127.0.0.1:{free_port()}", "--rdzv-id", "two-nodes", "--max-restarts", "2", "-m", "wgan_ext.train",
            *DIST_ARGS, "--out", run]
    agents = [subprocess.Popen(node, env=env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for _ in range(2)]
    wait_lines(run, 25, agents)
    os.kill(children(agents[1].pid)[-1], signal.SIGKILL)  # the second node's worker
    results = [finish(a) for a in agents]
    assert all(code == 0 for code, _ in results), results
    assert "(continuing at " in "".join(err for _, err in results)
    check_same_run(run, uninterrupted)


def test_a_preempted_torchrun_job_stops_with_a_checkpoint_and_continues(tmp_path, uninterrupted):
    run = str(tmp_path / "R")
    cmd = [*TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "wgan_ext.train", *DIST_ARGS, "--out", run]
    agent = subprocess.Popen(cmd, env=env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    wait_lines(run, 20, [agent])
    agent.send_signal(signal.SIGTERM)  # what a scheduler does; torchrun passes it on to its workers
    code, err = finish(agent)
    assert code != 0
    it, _ = models(run)
    assert f"SIGTERM received: stopped after generator iteration {it}" in err, err
    assert len(metrics(run)) == it  # every rank stopped after the same iteration
    r = subprocess.run(cmd, env=env(), cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0 and f"continuing at {it}" in r.stderr, r.stderr
    check_same_run(run, uninterrupted)


def test_a_stop_asked_during_the_last_block_lets_the_run_finish(tmp_path):
    c = resolve(TrainConfig(dataset="8gaussians", iters=4, batch_size=16, hidden=16, n_critic=1, out=str(tmp_path),
                            progress=False, tensorboard=False, plots=False, log_every=2))
    t = Trainer(c)
    real = t._step

    def step():
        if t.iteration == 1:  # asked in the first block: stops at its end (iteration 2)
            t.request_stop("SIGTERM received")
        return real()

    t._step = step
    from wgan_ext.train import Stopped
    with pytest.raises(Stopped, match="SIGTERM received: stopped after generator iteration 2"):
        t.train()
    assert load_checkpoint(str(tmp_path))["iteration"] == 2
    t2 = Trainer(c, resume_state=load_checkpoint(str(tmp_path)))
    real2 = t2._step

    def late():
        if t2.iteration == 3:  # asked in the last block: the run finishes normally
            t2.request_stop("SIGTERM received")
        return real2()

    t2._step = late
    assert t2.train()["iteration"] == 4
    assert load_checkpoint(str(tmp_path))["iteration"] == 4
