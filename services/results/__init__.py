"""The results layer: the files of a run and of an experiment, their one writer and one reader each,
the layout of a result store, and the stores themselves (a local folder, or Cloud Storage)."""
