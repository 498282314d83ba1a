"""A live visibility write load, shaped as Temporal's visibility task processor writes.

Writes at a fixed rate into a PostgreSQL visibility table or an OpenSearch visibility
index: new runs (the started record, status Running, _version 1) and closes of runs it
opened earlier (the same key, status Completed, a close time, a higher version), each
as Temporal writes it (PostgreSQL: one upsert under the version guard; OpenSearch: one
document with an external version). It reports the latency of every write measured from
the time it was due, so falling behind shows up as latency (no coordinated omission).

    python3 benches/liveload.py --pg "host=... dbname=... user=... password=..." --rate 200 --seconds 60
    python3 benches/liveload.py --os http://127.0.0.1:9200/INDEX --rate 200 --seconds 60

Prints one JSON line: writes, errors, achieved rate, latency p50/p95/p99/max in ms.
Needs psycopg2 for --pg (benches/live.sh installs it in a virtual environment).
It is the load beside which the health throttle of issue [live] is to be measured.
"""

import argparse
import base64
import collections
import concurrent.futures
import datetime
import json
import os
import random
import statistics
import sys
import threading
import time
import urllib.request
import uuid

PG_UPSERT = """
INSERT INTO executions_visibility (namespace_id, run_id, workflow_type_name, workflow_id, start_time,
  execution_time, status, close_time, history_length, history_size_bytes, execution_duration,
  state_transition_count, memo, encoding, task_queue, search_attributes, parent_workflow_id,
  parent_run_id, root_workflow_id, root_run_id, _version)
VALUES (%(namespace_id)s, %(run_id)s, %(workflow_type)s, %(workflow_id)s, %(start)s, %(start)s, %(status)s,
  %(close)s, %(history_length)s, %(history_size)s, %(duration)s, %(transitions)s, %(memo)s, 'Proto3',
  %(task_queue)s, %(search_attributes)s, NULL, NULL, %(workflow_id)s, %(run_id)s, %(version)s)
ON CONFLICT (namespace_id, run_id) DO UPDATE SET status = excluded.status, close_time = excluded.close_time,
  history_length = excluded.history_length, history_size_bytes = excluded.history_size_bytes,
  execution_duration = excluded.execution_duration, state_transition_count = excluded.state_transition_count,
  search_attributes = excluded.search_attributes, _version = excluded._version
WHERE executions_visibility._version < excluded._version
"""

# ExecutionStatus as Temporal stores it in SQL (enums.WorkflowExecutionStatus).
RUNNING, COMPLETED = 1, 2


class Workload:
    """Decides each write: a new run, or the close of a run this load opened."""

    def __init__(self, namespace_id, close_share, seed):
        self.namespace_id = namespace_id
        self.close_share = close_share
        self.random = random.Random(seed)
        self.open = collections.deque()
        self.lock = threading.Lock()
        self.counter = 0

    def next(self):
        now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        with self.lock:
            self.counter += 1
            if self.open and self.random.random() < self.close_share:
                run = self.open.popleft()
                return dict(run, status=COMPLETED, close=now, version=2, history_length=11,
                            history_size=2048, duration=int((now - run["start"]).total_seconds() * 1e9),
                            transitions=7)
            n = self.counter
        run = {
            "namespace_id": self.namespace_id,
            "run_id": str(uuid.UUID(int=self.random.getrandbits(128), version=4)),
            "workflow_id": f"live-{n}",
            "workflow_type": "LiveOrder",
            "task_queue": "live-queue",
            "start": now,
            "status": RUNNING,
            "close": None,
            "history_length": None,
            "history_size": None,
            "duration": None,
            "transitions": None,
            "memo": b"\x0a\x0b\x0a\x03key\x12\x04live",
            "search_attributes": json.dumps({"Keyword01": f"customer-{n % 1000}", "Int01": n}),
            "version": 1,
        }
        with self.lock:
            self.open.append(run)
        return run


def pg_writer(dsn):
    import psycopg2  # only the PostgreSQL load needs it

    local = threading.local()

    def write(record):
        if not hasattr(local, "conn"):
            local.conn = psycopg2.connect(dsn)
            local.conn.autocommit = True
        with local.conn.cursor() as cur:
            cur.execute(PG_UPSERT, record)

    return write


def os_writer(index_url):
    def write(record):
        doc = {
            "NamespaceId": record["namespace_id"],
            "RunId": record["run_id"],
            "WorkflowId": record["workflow_id"],
            "WorkflowType": record["workflow_type"],
            "TaskQueue": record["task_queue"],
            "StartTime": record["start"].isoformat() + "Z",
            "ExecutionTime": record["start"].isoformat() + "Z",
            "ExecutionStatus": "Running" if record["status"] == RUNNING else "Completed",
            "Memo": base64.b64encode(record["memo"]).decode(),
            "MemoEncoding": "Proto3",
            "RootWorkflowId": record["workflow_id"],
            "RootRunId": record["run_id"],
        }
        if record["close"] is not None:
            doc.update(CloseTime=record["close"].isoformat() + "Z", HistoryLength=record["history_length"],
                       HistorySizeBytes=record["history_size"], ExecutionDuration=record["duration"],
                       StateTransitionCount=record["transitions"])
        doc_id = urllib.request.quote(f"{record['workflow_id']}~{record['run_id']}", safe="")
        url = f"{index_url}/_doc/{doc_id}?version={record['version']}&version_type=external"
        req = urllib.request.Request(url, data=json.dumps(doc).encode(), method="PUT",
                                     headers={"content-type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=30).read()
        except urllib.error.HTTPError as e:
            if e.code != 409:  # a version conflict is the guard at work, not a failure
                raise

    return write


def percentile(sorted_values, p):
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target = ap.add_mutually_exclusive_group(required=True)
    target.add_argument("--pg", help="libpq connection string of the visibility database")
    target.add_argument("--os", help="URL of the visibility index, e.g. http://127.0.0.1:9200/temporal_visibility_v1")
    ap.add_argument("--rate", type=float, default=200, help="writes per second (default 200)")
    ap.add_argument("--seconds", type=float, default=60, help="how long (default 60)")
    ap.add_argument("--while-pid", type=int, help="instead of --seconds: until this process has exited")
    ap.add_argument("--workers", type=int, default=16, help="writes in flight at most (default 16)")
    ap.add_argument("--close-share", type=float, default=0.4, help="share of writes that close an open run")
    ap.add_argument("--namespace", default="11111111-2222-4333-8444-555555555555")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    write = pg_writer(args.pg) if args.pg else os_writer(args.os.rstrip("/"))
    workload = Workload(args.namespace, args.close_share, args.seed)
    latencies, errors, first_error = [], 0, None
    lock = threading.Lock()

    def one(due):
        nonlocal errors, first_error
        try:
            write(workload.next())
            ok = True
        except Exception as e:  # counted and reported; the load goes on
            ok, err = False, e
        took = time.monotonic() - due
        with lock:
            if ok:
                latencies.append(took)
            else:
                errors += 1
                first_error = first_error or repr(err)

    def running(i):
        if args.while_pid is None:
            return i < int(args.rate * args.seconds)
        # An exited child its parent has not reaped yet is a zombie: exited all the same.
        try:
            with open(f"/proc/{args.while_pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except (FileNotFoundError, ProcessLookupError):
            # Gone while the file was read (ProcessLookupError): exited too.
            return False

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
        i = 0
        while running(i):
            due = start + i / args.rate
            i += 1
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, due)
    elapsed = time.monotonic() - start
    ms = sorted(x * 1000 for x in latencies)
    print(json.dumps({
        "writes": len(ms), "errors": errors, "firstError": first_error,
        "seconds": round(elapsed, 2), "ratePerSecond": round(len(ms) / elapsed, 1),
        "p50Ms": round(percentile(ms, 50), 2), "p95Ms": round(percentile(ms, 95), 2),
        "p99Ms": round(percentile(ms, 99), 2), "maxMs": round(ms[-1], 2) if ms else 0.0,
        "meanMs": round(statistics.fmean(ms), 2) if ms else 0.0,
    }))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
