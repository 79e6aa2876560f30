"""A task module for the zygote tests: `main` records what the process running it sees."""

import json
import os
import time
from pathlib import Path

from diffusia.eval import libraries

if os.environ.get("DIFFUSIA_ZYGOTE_TORCH"):
    import torch  # noqa: F401  (resident libraries for the zygote to pass on)

time.sleep(float(os.environ.get("DIFFUSIA_ZYGOTE_IMPORT_S", 0)))  # a zygote slow to import
CALLS = 0  # module state: a fresh child starts from the zygote's, 0


def main(argv):
    global CALLS
    CALLS += 1
    libraries.make_resident()  # as the worker's memory baseline does
    rss_mb = next(int(x.split()[1]) / 1024 for x in open("/proc/self/status") if x.startswith("VmRSS:"))
    task = json.loads(Path(argv[0]).read_text())
    time.sleep(task.get("sleep", 0))
    if "raise" in task:
        raise ValueError(task["raise"])
    print("a line for the log")
    seen = {"pid": os.getpid(), "ppid": os.getppid(), "calls": CALLS, "env": os.environ.get("DIFFUSIA_ZYGOTE_TEST")}
    seen["set_order"] = list({f"component{i}" for i in range(8)})  # follows the hash seed
    seen["rss_mb"] = rss_mb
    Path(task["result"]).write_text(json.dumps(seen))
    return task.get("code", 0)


if __name__ == "__main__":  # without fork, `python -m` runs it
    import sys

    sys.exit(main(sys.argv[1:]))
