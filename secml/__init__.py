"""secml: the shared domain package of the security-ML platform.

Settings, data generators, features, models, scoring, control messages and
registry naming live here; the services (training, serving, ui) import them.
"""

__version__ = "0.1.0"
