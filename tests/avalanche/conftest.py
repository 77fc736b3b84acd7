"""The Avalanche drop-in's tests: they need avalanche-lib 0.6.0 (``make test-avalanche``
builds its environment); elsewhere this folder is not collected."""

import importlib.util
import warnings

if importlib.util.find_spec("avalanche") is None:
    collect_ignore_glob = ["test_*.py"]
else:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
