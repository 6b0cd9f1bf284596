"""Experiments: declarative experiment files, plugins (detectors, attacks, data sources),
adversarial attacks and the Dask fan-out shared by tuning and experiment stages."""
