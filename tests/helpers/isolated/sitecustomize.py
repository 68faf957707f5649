"""Put on ``PYTHONPATH`` (with ``ISOLATE_FROM_REPO=<checkout>``), this makes the checkout unimportable in a test
subprocess and in every process it starts (torchrun workers): the editable install's finder and the checkout's own
folders are dropped, the virtual environment's site-packages stay. Published bundles must run like this."""

import os
import sys

_repo = os.environ.get("ISOLATE_FROM_REPO")
if _repo:
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
    sys.path_hooks[:] = [h for h in sys.path_hooks if "editable" not in getattr(h, "__module__", "")]
    _own = {os.path.realpath(p) for p in (_repo, os.path.join(_repo, "tests"), os.path.join(_repo, "tests", "helpers"))}
    sys.path[:] = [p for p in sys.path if p and os.path.realpath(p) not in _own]
    sys.path_importer_cache.clear()
