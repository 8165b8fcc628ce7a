"""Record every language's canary observations (the worker's step outcomes, in the built
images) as tests/data/canary_observations.json, which tests/test_execute_observe.py judges
without Docker. Run it again when the worker's observation changes:

    .venv/bin/python tests/data/record_canaries.py tests/data/canary_observations.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from harness.execute.engine import Executor
from harness.execute.languages import all_languages


def record() -> dict:
    found = {}
    with Executor(jobs=1, cache=None, build_missing=False) as executor:
        for lang in all_languages():
            try:
                got = dict(executor.pool(lang, canary=False).run([lang.canary.good, lang.canary.bad]))
            except Exception as exc:  # a missing image: that language is skipped by the test
                print(f"{lang.key}: not recorded ({exc})", file=sys.stderr)
                continue
            for steps in got.values():
                for step in steps:
                    step["seconds"] = 0.0  # keep the file stable between recordings
            found[lang.key] = {"good": got[0], "bad": got[1]}
            executor._pools.pop(lang.key).close()
    return found


if __name__ == "__main__":
    Path(sys.argv[1]).write_text(json.dumps(record(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
