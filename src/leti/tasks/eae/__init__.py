"""Event argument extraction as code: ontology -> classes, data, verifier, metrics.

The task classes live in leti/tasks/geneva.py; `check.py` is also pasted into the sandbox."""
