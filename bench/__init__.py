"""shunter's benchmark suite. Not part of the test run; see README "Benchmarks"."""
