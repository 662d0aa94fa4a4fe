"""Run as a separate process by the store tests: write many results into one store.

    python -m tests.farm.writer_process DB DEVICE COUNT [--forever] [--go FILE]

Prints "started <run id>" once its run exists; with --go waits until FILE exists before writing
(so two writers really overlap); prints "ready" after the first committed result; with
--forever keeps writing until killed.
"""

from __future__ import annotations

import os
import sys
import time

from pipeline.farm.store import ResultsStore
from tests.helpers.records import latency_samples, make_record


def main() -> None:
    db, device, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    forever = "--forever" in sys.argv
    go = sys.argv[sys.argv.index("--go") + 1] if "--go" in sys.argv else None
    store = ResultsStore(db)
    run_id = store.start_run("farm", inventory=f"{device}.yaml", profile_name="default", info={"writer": device})
    print(f"started {run_id}", flush=True)
    deadline = time.monotonic() + 60
    while go and not os.path.exists(go):
        if time.monotonic() > deadline:
            sys.exit("never told to go")
        time.sleep(0.005)
    i = 0
    while forever or i < count:
        n = 20 + (i % 7) * 10  # varying sample counts: a torn write would show as a mismatch
        record = make_record(latency_samples(i, n=n), target=device)
        store.record_result(run_id, device, "rpi4", "default", "ok", record, f"/tmp/{device}-{i}.json")
        if i == 0:
            print("ready", flush=True)
        i += 1
    store.finish_run(run_id)
    store.close()


if __name__ == "__main__":
    main()
