"""Event argument extraction as code: ontology -> classes, data, verifier, host-side judge, metrics.

The task classes live in leti/tasks/geneva.py; `check.py` is also pasted into the sandbox, where
it only checks the event's shape; `judge.py` compares the reported arguments with the gold."""
