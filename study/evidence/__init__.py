"""Statistics on a study's records: intervals and verdicts over seeds, the fit diagnosis,
hyperparameter importance, the variants an ablation trains. Imports no engine."""
