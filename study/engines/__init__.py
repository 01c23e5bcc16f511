"""Adapters around the core: Ray (cluster, trial actor, scheduler, tuner), Optuna (storage,
sampler, searcher), MLflow (the study's records). Imports nothing itself: Ray imports
`study.engines.trial` in every trial's worker."""
