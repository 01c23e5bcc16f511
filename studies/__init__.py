"""Example study files; `digits.yaml` is the default that `study run` uses with no file."""
