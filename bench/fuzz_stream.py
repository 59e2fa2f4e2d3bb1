"""Long fuzzing runs of the client stream (the target of
tests/fuzz/test_fuzz_stream.py), printing progress.

    .venv/bin/python bench/fuzz_stream.py [--examples N] [--arbitrary] [--seed S]
    .venv/bin/python bench/fuzz_stream.py --atheris [libFuzzer options]

With hypothesis (the default), N examples of mutated XMPP streams (or of
arbitrary bytes with --arbitrary) are run and a failure is shrunk to a
minimal example.  With --atheris, when atheris is installed, libFuzzer's
coverage guidance drives the same hypothesis strategies until it finds a
failure or is stopped.  See docs/fuzzing.md.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypothesis import given, seed, strategies as st  # noqa: E402

from tests.fuzz.test_fuzz_stream import (  # noqa: E402
    FuzzTarget, fuzz_settings, read_sizes, stages, structured_inputs)


class Progress:
    """Runs the target and prints how far it got every ``every`` seconds."""

    def __init__(self, target, every=10.0):
        self.target = target
        self.every = every
        self.started = self.printed = time.monotonic()

    def run(self, stage, data, sizes):
        self.target.run(stage, data, sizes)
        now = time.monotonic()
        if now - self.printed >= self.every:
            self.printed = now
            count = self.target.examples
            print(f"{count} examples, {count / (now - self.started):.0f}/s", flush=True)


def fuzz_test(progress, arbitrary, examples):
    """The hypothesis test over ``progress``: structured or arbitrary input."""
    inputs = st.tuples(stages, st.binary(max_size=4096)) if arbitrary else structured_inputs()

    @fuzz_settings(examples)
    @given(stage_and_data=inputs, sizes=read_sizes)
    def fuzz(stage_and_data, sizes):
        progress.run(*stage_and_data, sizes)

    return fuzz


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100000)
    parser.add_argument("--arbitrary", action="store_true", help="arbitrary bytes")
    parser.add_argument("--seed", type=int, help="hypothesis seed, to repeat a run")
    parser.add_argument("--atheris", action="store_true", help="coverage-guided, with atheris")
    options, fuzzer_args = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as directory:
        progress = Progress(FuzzTarget(directory))
        test = fuzz_test(progress, options.arbitrary, options.examples)
        if options.atheris:
            try:
                import atheris
            except ImportError:
                sys.exit("atheris is not installed (pip install atheris)")
            atheris.Setup([sys.argv[0], *fuzzer_args], test.hypothesis.fuzz_one_input)
            atheris.Fuzz()
        if options.seed is not None:
            test = seed(options.seed)(test)
        started = time.monotonic()
        test()
        count = progress.target.examples
        print(f"done: {count} examples in {time.monotonic() - started:.0f} s, no failure")


if __name__ == "__main__":
    main()
