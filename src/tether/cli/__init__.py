"""The ``tether`` command line: ``serve``, ``chat``, ``runs``, ``sessions``, ``db upgrade``."""
