"""The report wing: what a finished experiment's files say (SLO verdicts, analysis, the traces
join, fits, the deployment table), its plots and its rendering, reading only through the
results layer (etude.services.results)."""
