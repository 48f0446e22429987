"""The classroom layer the notebooks use, on top of the library.

``nb`` (the setup cell, repo-relative paths, load-else-train, the three-arm comparison), ``viz``
(plots), ``widgets`` (the interactive search), ``exercises`` (the checkers), ``method_map`` (the
method figure), ``demo_models`` (loading the shipped demo models), ``stats`` (seed statistics and
their table). It imports the library, never the experiments; it reaches training only through the
library's public face (``daimlib.train``). Nothing in ``daimlib`` outside this package imports it.
"""
