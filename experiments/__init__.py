"""DAIM Kit's experiments: what produced the committed results, apart from the library.

``daimlib`` is the library and ``daimlib.course`` the classroom layer; this package holds the
experiment orchestration that uses both (as ``open_clip_train`` sits beside ``open_clip``):

- :mod:`experiments.ablation`: variants x seeds, trained and tested (``results/ablation_powered``);
- :mod:`experiments.recipe_search`: the demo recipes and their long seed runs (``results/recipe_search``);
- :mod:`experiments.demo_models`: training and exporting the shipped demo models (``models/``).

Each writes its results with the columns the notebooks read; the library knows no experiment.
Command line: ``python -m experiments {ablate, ablate-combine, demo-models} --help`` and
``python -m experiments.recipe_search --help``.
"""
