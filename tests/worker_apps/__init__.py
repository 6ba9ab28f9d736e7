"""Worker apps the tests run in subprocesses: job types, handlers and a runner."""
