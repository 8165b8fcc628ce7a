"""Hostile programs in every offered language's runtime (the paper's languages at least, plus
java, go, cpp and py): a fork bomb, a memory hog, disk filling, endless output, an endless
sleep and a network attempt, each written in the language (`tests/hostile/<key>.toml`, data
only). A language's programs run in ONE batch through the real executor, one slot and one
lane, run-step timeout shortened, each followed in the same container by the language's
known-good canary, which must still pass. A language whose image is not built is skipped."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from test_execute_support import own_containers, with_timeout

from harness.execute.engine import Executor
from harness.execute.languages import TIMEOUT_EXIT_CODE, language_files, load_language, status_of

pytest_plugins = ("test_execute_support",)

HOSTILE_DIR = Path(__file__).parent / "hostile"
KINDS = ("fork_bomb", "memory_hog", "fill_disk", "endless_output", "endless_sleep", "network")
EXPECTATIONS = ("times_out", "fails", "not_ok")
REQUIRED = ("py", "rb", "pl", "lua", "rkt", "rs", "swift", "d", "java", "go", "cpp")
OFFERED = sorted(p.stem for p in HOSTILE_DIR.glob("*.toml"))


def hostile(key: str) -> dict:
    return tomllib.loads((HOSTILE_DIR / f"{key}.toml").read_text(encoding="utf-8"))


def test_every_required_language_has_every_hostile_program():
    assert set(REQUIRED) <= set(OFFERED), sorted(set(REQUIRED) - set(OFFERED))
    for key in OFFERED:
        data = hostile(key)
        assert key in language_files(), f"tests/hostile/{key}.toml: no languages/{key}.toml"
        assert set(data) == {"timeout_s", "programs"} and data["timeout_s"] > 0, key
        assert set(data["programs"]) == set(KINDS), (key, set(KINDS) ^ set(data["programs"]))
        for kind, program in data["programs"].items():
            assert program["expect"] in EXPECTATIONS and program["source"].strip(), (key, kind)


def problems(lang, kind: str, expect: str, result) -> list[str]:
    """What is wrong with a hostile program's result ([] when it was contained as expected)."""
    timeout_status = status_of(lang, len(lang.steps) - 1, -9, "", "", True, "time")
    got = f"{kind}: {result.status} (exit {result.exit_code}) {result.stderr.strip()[-200:]!r}"
    wrong = []
    if result.status == "OK" or result.passed:
        wrong.append(f"{got}: a hostile program passed")
    elif expect == "times_out" and (result.exit_code != TIMEOUT_EXIT_CODE or result.status != timeout_status):
        wrong.append(f"{got}: expected a timeout ({timeout_status}, exit -1)")
    elif expect == "fails" and (result.exit_code in (0, TIMEOUT_EXIT_CODE) or result.status == "Timeout"):
        wrong.append(f"{got}: expected it to fail by itself")
    kept = 2 * lang.output_limit + 64  # a stream's head and tail, and the note of the cut
    if len(result.stdout) > kept or len(result.stderr) > kept:
        wrong.append(f"{kind}: output not capped")
    return wrong


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("key", OFFERED)
def test_hostile_programs_are_contained_and_neighbours_unharmed(key, docker_client):
    from harness.execute.images import language_image

    lang = load_language(key)
    if language_image(docker_client, lang) is None:
        pytest.skip(f"image {lang.image_tag} is not built (flora-eval images build {key})")
    data = hostile(key)
    lang = with_timeout(lang, data["timeout_s"])
    sources = []
    for i, kind in enumerate(KINDS):
        # the known-good program, made distinct by trailing newlines (identical ones run once)
        sources += [data["programs"][kind]["source"], lang.canary.good + "\n" * (i + 1)]
    # timeouts are not confirmed here: this test is about containment, and every confirmation
    # would cost another time limit (tests/test_execute_honest.py covers confirmation)
    with Executor(jobs=1, cache=None, confirm_timeouts=False) as executor:
        results = dict(executor.run_programs(lang, sources))
        stats = executor.stats.as_dict()
    wrong = []
    for i, kind in enumerate(KINDS):
        wrong += problems(lang, kind, data["programs"][kind]["expect"], results[2 * i])
        neighbour = results[2 * i + 1]
        if not neighbour.passed:
            wrong.append(f"the program after {kind} failed: {neighbour.status} {neighbour.stderr[-200:]!r}")
    assert wrong == [], "\n".join(wrong)
    assert stats["sandbox_restarts"] == 0, "no hostile program brought its container down"
    assert stats["containers_retired"] == 0, "cleanup killed every process each time"
    assert own_containers(docker_client) == []
