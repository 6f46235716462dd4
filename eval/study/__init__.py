"""Studies: arms x seeds trained against a compute-matched control, scored, and reported.

One module a step: `config` parses the study file, `runs` makes shard sets and trains runs,
`scoring` scores a run's checkpoints, `stats` holds the paired statistics, `report` writes
results.md and results.png, `progress` prints time left, and `runner` plans and runs it all
(`gcl-eval study STUDY.yaml`).
"""
