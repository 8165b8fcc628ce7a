from harness.generate.stops import truncate_at_stop


def test_earliest_stop_token_wins_and_is_dropped():
    stops = ["\ndef ", "\n# ", "\nif ", "\nclass"]
    text = "    return x\n# comment\ndef g():"
    assert truncate_at_stop(text, stops) == "    return x"


def test_no_stop_token_keeps_everything():
    assert truncate_at_stop("    return 1", ["\ndef "]) == "    return 1"
