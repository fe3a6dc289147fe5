#!/usr/bin/env python3
"""A Ridgeline client in Python, from the .proto files alone.

Submits a job file (or follows a job already submitted), prints each
decision as the coordinator makes it, then the job's final state and, for a
procedure job, the recommended hyperparameters.

    python3 examples/python/ridgeline_client.py examples/procedure.toml
    python3 examples/python/ridgeline_client.py --job JOB_ID

The gRPC stubs are generated from proto/ at start, into a temporary
directory, with grpcio-tools (pip install -r examples/python/requirements.txt).

The coordinator's address is --coordinator, else $RIDGELINE_COORDINATOR,
else http://127.0.0.1:50051. The bearer token, like the Rust client's, is
read from --token-file, else the file named by $RIDGELINE_TOKEN_FILE, else
$RIDGELINE_TOKEN; never from the command line.
"""

import argparse
import importlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

try:
    import grpc
    from grpc_tools import protoc
except ImportError as e:  # pragma: no cover - depends on the machine
    sys.exit(
        f"ridgeline_client: {e}: install grpcio and grpcio-tools "
        "(python3 -m pip install -r examples/python/requirements.txt)"
    )

PROTO = "ridgeline/v1/ridgeline.proto"
DEFAULT_PROTO_DIR = Path(__file__).resolve().parent.parent.parent / "proto"


def load_stubs(proto_dir):
    """Generates ridgeline_pb2 and ridgeline_pb2_grpc into a temp dir and imports them."""
    if not (proto_dir / PROTO).is_file():
        sys.exit(f"ridgeline_client: {proto_dir / PROTO} not found (give --proto-dir)")
    out = tempfile.mkdtemp(prefix="ridgeline-stubs-")
    try:
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{proto_dir}",
                f"--python_out={out}",
                f"--grpc_python_out={out}",
                str(proto_dir / PROTO),
            ]
        )
        if code != 0:
            sys.exit(f"ridgeline_client: protoc failed on {proto_dir / PROTO}")
        sys.path.insert(0, out)
        pb = importlib.import_module("ridgeline.v1.ridgeline_pb2")
        rpc = importlib.import_module("ridgeline.v1.ridgeline_pb2_grpc")
    finally:
        # Imported modules stay in memory; the files are no longer needed.
        shutil.rmtree(out, ignore_errors=True)
    return pb, rpc


def read_token(token_file):
    path = token_file or os.environ.get("RIDGELINE_TOKEN_FILE")
    if path:
        try:
            lines = [l.strip() for l in Path(path).read_text().splitlines()]
        except OSError as e:
            sys.exit(f"ridgeline_client: cannot read the token file {path}: {e}")
        token = next((l for l in lines if l), None)
        if token is None:
            sys.exit(f"ridgeline_client: the token file {path} is empty")
        return token
    token = os.environ.get("RIDGELINE_TOKEN", "").strip()
    return token or None


def open_channel(address, ca_cert):
    """http://HOST:PORT (or HOST:PORT) in plain text, https://HOST:PORT with TLS."""
    if address.startswith("https://"):
        roots = Path(ca_cert).read_bytes() if ca_cert else None
        creds = grpc.ssl_channel_credentials(root_certificates=roots)
        return grpc.secure_channel(address[len("https://") :], creds)
    if address.startswith("http://"):
        address = address[len("http://") :]
    return grpc.insecure_channel(address.rstrip("/"))


def state_name(pb, state):
    return pb.JobState.Name(state).removeprefix("JOB_STATE_")


def print_decision(d):
    print(f"decision {d.step}: {d.title}: {d.summary} [{d.confidence}]", flush=True)
    for f in d.red_flags:
        print(f"  red flag {f.code}: {f.title}: {f.detail}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("job_file", nargs="?", help="a job file (TOML, or JSON if *.json) to submit")
    ap.add_argument("--job", help="follow this job instead of submitting one")
    ap.add_argument(
        "--coordinator",
        default=os.environ.get("RIDGELINE_COORDINATOR", "http://127.0.0.1:50051"),
    )
    ap.add_argument("--token-file", help="file holding the client token (first non-empty line)")
    ap.add_argument("--ca-cert", help="PEM file of the CA that signed an https:// coordinator's certificate")
    ap.add_argument("--proto-dir", type=Path, default=DEFAULT_PROTO_DIR)
    ap.add_argument("--thoughts", action="store_true", help="also print each decision's Thoughts")
    args = ap.parse_args()
    if (args.job_file is None) == (args.job is None):
        ap.error("give a job file to submit, or --job JOB_ID")

    pb, rpc = load_stubs(args.proto_dir)
    token = read_token(args.token_file)
    metadata = [("authorization", f"Bearer {token}")] if token else []
    channel = open_channel(args.coordinator, args.ca_cert)
    jobs = rpc.JobServiceStub(channel)

    try:
        if args.job is None:
            path = Path(args.job_file)
            fmt = pb.JOB_FORMAT_JSON if path.suffix.lower() == ".json" else pb.JOB_FORMAT_TOML
            reply = jobs.SubmitJob(
                pb.SubmitJobRequest(text=path.read_text(), format=fmt), metadata=metadata
            )
            job_id = reply.job_id
            print(f"submitted {path} as job {job_id}", flush=True)
        else:
            job_id = args.job

        # The stream: a snapshot, every stored event, then live ones until the job ends.
        for event in jobs.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=metadata):
            kind = event.WhichOneof("kind")
            if kind == "snapshot":
                s = event.snapshot
                print(f"job {s.job_id} ({s.kind}, {s.name!r}): {state_name(pb, s.state)}", flush=True)
            elif kind == "decision":
                print_decision(event.decision)
                if args.thoughts:
                    print(f"  thoughts: {event.decision.thoughts}", flush=True)
            elif kind == "job":
                msg = f": {event.job.message}" if event.job.message else ""
                print(f"job {state_name(pb, event.job.state)}{msg}", flush=True)
            elif kind == "task" and event.task.state == pb.TASK_STATE_FAILED:
                print(f"task {event.task.task_id} failed: {event.task.message}", flush=True)

        status = jobs.GetJob(pb.GetJobRequest(job_id=job_id), metadata=metadata)
        results = jobs.GetResults(pb.GetResultsRequest(job_id=job_id), metadata=metadata)
    except grpc.RpcError as e:
        sys.exit(f"ridgeline_client: {e.code().name}: {e.details()} ({args.coordinator})")

    final = state_name(pb, status.state)
    error = f": {status.error}" if status.error else ""
    print(f"final state: {final}{error} ({status.epochs_trained} epochs trained)")
    rec = next((d for d in results.decisions if d.step == "recommendation"), None)
    if rec is not None:
        print(f"recommendation: {rec.summary}")
        toml = json.loads(rec.json).get("toml") if rec.json else None
        if toml:
            print(toml.rstrip())
    return 0 if status.state == pb.JOB_STATE_SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main())
