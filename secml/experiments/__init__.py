"""Experiments: declarative experiment files, plugins (data sets, detectors, attacks) and the
adversarial attacks; the Prefect/Dask side lives in ``training/`` (experiment, tune, cluster)."""
