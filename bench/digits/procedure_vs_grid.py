#!/usr/bin/env python3
"""Procedure vs grid on the UCI 8x8 digits, as a new user would run it.

Builds the release binaries if missing, writes the digits as IDX files,
serves a coordinator on a local port with N local workers, submits
examples/grid_digits.toml and examples/procedure_digits.toml, then:

  grid       the mean final heldout accuracy of every (lr, momentum) over
             its seeds; the best configuration; the epochs the grid trained
  procedure  `coordinator report` -> recommended.json / recommended.toml;
             the epochs the procedure trained
  verify     a `train` job: the same data/model/batch/seeds + the pasted
             recommended.toml; its mean final heldout accuracy
  fresh      (informational, --no-fresh to skip) the grid's best
             configuration and the recommendation again, on seeds the grid
             never saw, since the grid's best of 48 means is picked on the
             very seeds it is reported on

and prints a table with both goals of the issue:
  accuracy gap   best grid config - verified recommendation <= 0.5 points
  epoch ratio    procedure epochs / grid epochs              <= 15 %

Exits non-zero only on errors (a job failing, a timeout), not on FAIL.

    python3 bench/digits/procedure_vs_grid.py [--epochs 20] [--workers 2]
        [--out bench/out/digits-run] [--port 0] [--no-fresh]

Needs numpy and scikit-learn (for the data), cargo (to build once).
"""

import argparse
import atexit
import datetime
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
COORD = os.path.join(ROOT, "target", "release", "coordinator")
WORKER = os.path.join(ROOT, "target", "release", "worker")
DATA = os.path.join(ROOT, "bench", "out", "digits")
GRID_JOB = os.path.join(ROOT, "examples", "grid_digits.toml")
PROC_JOB = os.path.join(ROOT, "examples", "procedure_digits.toml")

GAP_GOAL_POINTS = 0.5
RATIO_GOAL = 0.15

PROCS = []  # (name, Popen), ended in reverse order on exit


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def die(msg):
    print(f"procedure_vs_grid: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


# ---------------------------------------------------------------- processes


TMPDIRS = []  # removed on exit, after the processes have stopped


def stop_all():
    """Workers first (so they do not retry a vanished coordinator), then
    the coordinator: SIGTERM, up to 15 s, then SIGKILL; then the temp dirs."""
    for group in (lambda n: n != "coordinator", lambda n: n == "coordinator"):
        procs = [p for n, p in PROCS if group(n)]
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.time() + 15
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    PROCS.clear()
    for d in TMPDIRS:
        shutil.rmtree(d, ignore_errors=True)
    TMPDIRS.clear()


def on_signal(signum, _frame):
    # atexit runs stop_all
    sys.exit(128 + signum)


def start(name, argv, logfile, env=None):
    f = open(logfile, "w")
    p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    PROCS.append((name, p))
    return p


def cli(*args, check=True):
    """Runs a client command of the coordinator binary; returns stdout."""
    r = subprocess.run([COORD, *args], capture_output=True, text=True, cwd=ROOT)
    if check and r.returncode != 0:
        die(f"`coordinator {' '.join(args)}` failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout if check else r


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- jobs


def load_job(path, epochs):
    with open(path, "rb") as f:
        job = tomllib.load(f)
    src = job["data"]["source"]
    for k in ("train_images", "train_labels", "heldout_images", "heldout_labels"):
        if k in src and not os.path.isabs(src[k]):
            src[k] = os.path.join(ROOT, src[k])
    if epochs is not None:
        if "grid" in job:
            job["grid"]["epochs"] = epochs
            job["chunk_epochs"] = epochs
        if "procedure" in job:
            job["procedure"]["epochs"] = epochs
    return job


def submit(job, tmpdir, name):
    path = os.path.join(tmpdir, f"{name}.json")
    with open(path, "w") as f:
        json.dump(job, f, indent=2)
    job_id = cli("submit", path, "--format", "json").strip()
    log(f"submitted {name}: {job_id}")
    return job_id


def status(job_id):
    text = cli("status", job_id)
    state, epochs = None, None
    for line in text.splitlines():
        if line.startswith("state "):
            state = line.split(None, 1)[1].strip()
        elif line.startswith("epochs ") and line.rstrip().endswith("trained"):
            epochs = int(line.split()[1])
    return state, epochs, text


def wait_all(jobs, deadline, on_done=None):
    """Polls until every job in `jobs` (name -> id) has ended; returns
    name -> (state, epochs_trained, seconds). `on_done(name)` may return
    further (name, id) pairs to wait on as well."""
    t0 = {n: time.time() for n in jobs}
    pending = dict(jobs)
    done = {}
    last = 0.0
    while pending:
        if time.time() > deadline:
            die(f"timed out waiting for {', '.join(pending)}")
        for name, job_id in list(pending.items()):
            state, epochs, text = status(job_id)
            word = (state or "").split(":")[0]
            if word in ("succeeded", "failed", "cancelled"):
                del pending[name]
                done[name] = (state, epochs, time.time() - t0[name])
                log(f"{name} {job_id}: {state}, {epochs} epochs trained, {done[name][2]:.0f} s")
                if word != "succeeded":
                    die(f"{name} job {job_id} ended {state}\n{text}")
                if on_done:
                    for n2, id2 in on_done(name) or []:
                        pending[n2] = id2
                        t0[n2] = time.time()
        if pending and time.time() - last > 60:
            last = time.time()
            progress = []
            for name, job_id in pending.items():
                _, _, text = status(job_id)
                prog = next((l.split(None, 1)[1] for l in text.splitlines() if l.startswith("progress ")), "?")
                progress.append(f"{name} {prog}")
            log("waiting: " + "; ".join(progress))
        time.sleep(2)
    return done


def results(job_id):
    return json.loads(cli("export", job_id, "--format", "json"))


def final_accuracy(curve):
    """The heldout accuracy at the run's last measurement (a diverged run
    counts with its last measured accuracy, or 0 if it has none)."""
    pts = [p for p in curve["points"] if p.get("heldout")]
    if not pts:
        return 0.0, None
    p = max(pts, key=lambda p: p["x"])
    h = p["heldout"]
    acc = h.get("accuracy", h.get("metric"))
    return (acc if acc is not None else 0.0), p["x"]


def mean(xs):
    return sum(xs) / len(xs)


def sd(xs):
    if len(xs) < 2:
        return 0.0
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def train_figure(res):
    """Mean and sd of the final heldout accuracy of a `train` job's seeds."""
    accs = [final_accuracy(c)[0] for c in res["curves"]]
    ends = [c["end"]["kind"] if c.get("end") else "?" for c in res["curves"]]
    return mean(accs), sd(accs), accs, ends


def grid_table(res, replicates):
    by_config = {}
    for c in res["curves"]:
        config, _, _seed = c["curve"].rpartition(",seed=")
        acc, _ = final_accuracy(c)
        diverged = bool(c.get("end") and c["end"]["kind"] == "diverged")
        by_config.setdefault(config, []).append((acc, diverged))
    rows = []
    for config, runs in by_config.items():
        kv = dict(part.split("=", 1) for part in config.split(","))
        accs = [a for a, _ in runs]
        rows.append(
            {
                "config": config,
                "lr": float(kv["lr"]),
                "momentum": float(kv["momentum"]),
                "mean": mean(accs),
                "sd": sd(accs),
                "seeds": len(runs),
                "diverged": sum(d for _, d in runs),
            }
        )
    incomplete = [r["config"] for r in rows if r["seeds"] != replicates]
    if incomplete:
        die(f"grid configurations without {replicates} seeds: {incomplete}")
    rows.sort(key=lambda r: (-r["mean"], r["lr"], r["momentum"]))
    return rows


def head_of(job):
    """What a `train` job shares with the procedure job: data, model, batch."""
    keep = ("data", "model", "batch_size", "train_eval_size", "metric", "device", "max_attempts")
    return {k: v for k, v in job.items() if k in keep}


def recommended_train_job(proc_job, rec_toml_path, seed, replicates, name):
    with open(rec_toml_path, "rb") as f:
        rec = tomllib.load(f)
    if "train" not in rec or "optimizer" not in rec:
        die(f"{rec_toml_path} has no [optimizer] and [train] sections")
    job = {"kind": "train", "name": name, "replicates": replicates, "seed": seed}
    job.update(head_of(proc_job))
    job["chunk_epochs"] = rec["train"]["epochs"]
    job["optimizer"] = rec["optimizer"]
    job["train"] = rec["train"]
    return job


def grid_best_train_job(grid_job, best, seed, replicates, name):
    epochs = grid_job["grid"]["epochs"]
    job = {"kind": "train", "name": name, "replicates": replicates, "seed": seed}
    job.update(head_of(grid_job))
    job["optimizer"] = grid_job.get("optimizer", {"kind": "sgd"})
    job["chunk_epochs"] = epochs
    job["train"] = {
        "epochs": epochs,
        "schedule": {
            "lr": {"kind": "constant", "lr": best["lr"]},
            "momentum": {"kind": "constant", "value": best["momentum"]},
        },
    }
    return job


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description="Procedure vs LR x momentum grid on the 8x8 digits (IDX).")
    ap.add_argument("--epochs", type=int, default=None, help="override the runs' length (grid.epochs and procedure.epochs; default: the job files')")
    ap.add_argument("--workers", type=int, default=2, help="local workers, one slot each (default 2)")
    ap.add_argument("--port", type=int, default=0, help="coordinator port (default: a free one)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "out", "digits-run"), help="where the summary, logs and reports go")
    ap.add_argument("--fresh-seed", type=int, default=100, help="first seed of the fresh-seed check (default 100)")
    ap.add_argument("--no-fresh", action="store_true", help="skip the fresh-seed check")
    ap.add_argument("--timeout", type=float, default=4 * 3600, help="seconds for everything (default 4 h)")
    args = ap.parse_args()

    atexit.register(stop_all)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    t_start = time.time()
    deadline = t_start + args.timeout

    if not (os.access(COORD, os.X_OK) and os.access(WORKER, os.X_OK)):
        log("building the release binaries (once; minutes)")
        r = subprocess.run(
            ["cargo", "build", "--release", "-p", "ridgeline-coordinator", "-p", "ridgeline-worker", "--bins"],
            cwd=ROOT,
        )
        if r.returncode != 0:
            die("cargo build failed")
    if "report" not in cli("--help"):
        die("this coordinator binary has no `report` command (rebuild it)")

    r = subprocess.run([sys.executable, os.path.join(HERE, "make_idx.py"), DATA], cwd=ROOT)
    if r.returncode != 0:
        die("make_idx.py failed")

    os.makedirs(args.out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="ridgeline-digits-")
    TMPDIRS.append(tmp)
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}"
    os.environ["RIDGELINE_COORDINATOR"] = url

    log(f"coordinator on {url}, data dir {tmp}/data, logs in {args.out}")
    coord = start(
        "coordinator",
        [COORD, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", os.path.join(tmp, "data")],
        os.path.join(args.out, "coordinator.log"),
    )
    for _ in range(300):
        if coord.poll() is not None:
            die(f"the coordinator exited ({coord.returncode}); see {args.out}/coordinator.log")
        if cli("list", check=False).returncode == 0:
            break
        time.sleep(0.2)
    else:
        die("the coordinator did not come up")

    cores = os.cpu_count() or 1
    threads = max(1, cores // args.workers)
    wenv = dict(os.environ, RAYON_NUM_THREADS=str(threads), CANDLE_NUM_THREADS="1")
    for i in range(args.workers):
        start(
            f"worker-{i}",
            [WORKER, "--coordinator", url, "--slots", "1", "--name", f"bench-{i}",
             "--cache-dir", os.path.join(tmp, f"cache-{i}"), "--shutdown-grace", "1"],
            os.path.join(args.out, f"worker-{i}.log"),
            env=wenv,
        )
    log(f"{args.workers} workers, {threads} thread(s) each, on {cores} cores")

    grid_job = load_job(GRID_JOB, args.epochs)
    proc_job = load_job(PROC_JOB, args.epochs)
    reps = grid_job.get("replicates", 3)
    ids = {
        "procedure": submit(proc_job, tmp, "procedure"),
        "grid": submit(grid_job, tmp, "grid"),
    }

    report_dir = os.path.join(args.out, "procedure-report")
    extra = {}

    def after(name):
        # As soon as the procedure has recommended, verify it (while the
        # grid still runs): the same seeds as the grid's.
        if name != "procedure":
            return []
        shutil.rmtree(report_dir, ignore_errors=True)
        cli("report", ids["procedure"], "--out", report_dir)
        rec_toml = os.path.join(report_dir, "recommended.toml")
        if not os.path.exists(rec_toml):
            die(f"the procedure's report has no recommended.toml (see {report_dir})")
        extra["rec_toml"] = rec_toml
        job = recommended_train_job(proc_job, rec_toml, grid_job.get("seed", 0), reps, "digits: recommended, grid's seeds")
        ids["verify"] = submit(job, tmp, "verify")
        out = [("verify", ids["verify"])]
        if not args.no_fresh:
            job = recommended_train_job(proc_job, rec_toml, args.fresh_seed, reps, "digits: recommended, fresh seeds")
            ids["fresh_rec"] = submit(job, tmp, "fresh_rec")
            out.append(("fresh_rec", ids["fresh_rec"]))
        return out

    done = wait_all(ids, deadline, on_done=after)

    grid_res = results(ids["grid"])
    rows = grid_table(grid_res, reps)
    best = rows[0]
    if not args.no_fresh:
        job = grid_best_train_job(grid_job, best, args.fresh_seed, reps, "digits: grid best, fresh seeds")
        ids["fresh_grid"] = submit(job, tmp, "fresh_grid")
        done.update(wait_all({"fresh_grid": ids["fresh_grid"]}, deadline))

    with open(os.path.join(report_dir, "recommended.json")) as f:
        rec = json.load(f)
    with open(extra["rec_toml"]) as f:
        rec_toml_text = f.read()

    grid_epochs = done["grid"][1]
    proc_epochs = done["procedure"][1]
    verify_epochs = done["verify"][1]
    if rec.get("epochs_trained") not in (None, proc_epochs):
        log(f"note: recommended.json says epochs_trained {rec.get('epochs_trained')}, status says {proc_epochs}")

    v_mean, v_sd, v_accs, v_ends = train_figure(results(ids["verify"]))
    gap = (best["mean"] - v_mean) * 100
    ratio = proc_epochs / grid_epochs
    ratio_with_verify = (proc_epochs + verify_epochs) / grid_epochs
    gap_ok = gap <= GAP_GOAL_POINTS
    ratio_ok = ratio <= RATIO_GOAL

    fresh = None
    if not args.no_fresh:
        fg = train_figure(results(ids["fresh_grid"]))
        fr = train_figure(results(ids["fresh_rec"]))
        fresh = {"grid_best": fg[:3], "recommended": fr[:3], "gap_points": (fg[0] - fr[0]) * 100}

    # ---- the table
    def cfg(lr, mu):
        return f"lr {lr:g}, momentum {mu:g}"

    sched = rec.get("schedule_kind") or "?"
    if rec.get("m") is not None:
        sched += f" (M = {rec['m']:g})"
    opt = (rec.get("optimizer") or {}).get("kind", "?")
    lines = []
    w = lines.append
    w("")
    w(f"8x8 digits (IDX, 1437 train / 360 heldout), MLP 64-[64]-10, batch 32, {reps} seeds")
    nominal = len(rows) * reps * grid_job["grid"]["epochs"]
    w(f"grid: {len(rows)} configs x {reps} seeds x {grid_job['grid']['epochs']} epochs = {nominal} epochs nominal, "
      f"{grid_epochs} trained (diverged runs stop early); procedure epochs = {proc_job['procedure']['epochs']}")
    w("")
    w("top of the grid (mean final heldout accuracy over seeds):")
    for r in rows[:5]:
        w(f"  {cfg(r['lr'], r['momentum']):<28} {r['mean'] * 100:6.2f} % ± {r['sd'] * 100:4.2f}")
    w("")
    w(f"{'':<36}{'configuration':<52}{'heldout acc':>12}{'ep. spent':>11}")
    w(f"{'best grid configuration':<36}{cfg(best['lr'], best['momentum']) + ', constant, ' + str(grid_job['grid']['epochs']) + ' ep':<52}{best['mean'] * 100:>10.2f} %{grid_epochs:>11}")
    mu = rec.get("momentum")
    rec_desc = f"{opt} lr {rec.get('lr', float('nan')):.4g}, momentum {'?' if mu is None else format(mu, '.4g')}, {sched}, {rec.get('epochs')} ep"
    w(f"{'recommended (verified, same seeds)':<36}{rec_desc:<52}{v_mean * 100:>10.2f} %{proc_epochs:>11}")
    if rec.get("expected_metric") is not None:
        w(f"{'  (procedure own run, full length)':<36}{'group ' + str(rec.get('group')):<52}{rec['expected_metric'] * 100:>10.2f} %")
    w("")
    w(f"accuracy gap   best grid - recommended = {gap:+.2f} points   (goal <= {GAP_GOAL_POINTS})   {'PASS' if gap_ok else 'FAIL'}")
    w(f"epoch ratio    procedure / grid = {proc_epochs} / {grid_epochs} = {ratio * 100:.1f} %   (goal <= {RATIO_GOAL * 100:.0f} %)   {'PASS' if ratio_ok else 'FAIL'}")
    w(f"               with the verification run: ({proc_epochs} + {verify_epochs}) / {grid_epochs} = {ratio_with_verify * 100:.1f} %")
    if fresh:
        (gm, gs, _), (rm, rs, _) = fresh["grid_best"], fresh["recommended"]
        w(f"fresh seeds {args.fresh_seed}..{args.fresh_seed + reps - 1} (informational): grid best {gm * 100:.2f} % ± {gs * 100:.2f}, "
          f"recommended {rm * 100:.2f} % ± {rs * 100:.2f}, gap {fresh['gap_points']:+.2f} points")
    w(f"wall time      procedure {done['procedure'][2]:.0f} s, grid {done['grid'][2]:.0f} s (sharing {args.workers} workers), total {time.time() - t_start:.0f} s")
    w("")
    w("recommended.toml:")
    lines.extend("  " + l for l in rec_toml_text.rstrip().splitlines())
    text = "\n".join(lines)
    print(text, flush=True)

    summary = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()}, {cores} cores",
        "workers": args.workers,
        "epochs": {"grid": grid_job["grid"]["epochs"], "procedure": proc_job["procedure"]["epochs"]},
        "jobs": ids,
        "grid": {"rows": rows, "best": best, "epochs_trained": grid_epochs, "seconds": done["grid"][2]},
        "procedure": {"recommended": rec, "epochs_trained": proc_epochs, "seconds": done["procedure"][2]},
        "verify": {"mean": v_mean, "sd": v_sd, "accs": v_accs, "ends": v_ends, "epochs_trained": verify_epochs},
        "fresh": fresh,
        "gap_points": gap,
        "gap_pass": gap_ok,
        "epoch_ratio": ratio,
        "epoch_ratio_with_verify": ratio_with_verify,
        "ratio_pass": ratio_ok,
        "total_seconds": time.time() - t_start,
    }
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(args.out, "summary.txt"), "w") as f:
        f.write(text + "\n")
    log(f"summary in {args.out}/summary.txt and summary.json; procedure report in {report_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
