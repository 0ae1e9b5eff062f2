"""What the tests share beside conftest.py's hooks and fixtures: configs, commands, data and faults, one module a
job. None but `faults` loads torch or Lightning on import, and conftest.py imports only `configs`: pytest-xdist's
controller, which runs no test, imports conftest.py too, and then starts its workers ~9 s sooner."""
