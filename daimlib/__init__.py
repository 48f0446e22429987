"""DAIM Kit: the library behind the notebooks.

One module per idea of the paper: ``config`` (presets), ``fdm`` (ContraNorm), ``encoders``
(Swin + BERT streams), ``similarity`` (SCAN cross-attention), ``losses`` (triplet + the adaptive
margin), ``model`` (``DAIM``), ``data``, ``evaluate``, ``train``, ``checkpoint``, ``viz``,
``published``. Run ``python -m daimlib --help`` for the command line.
"""

__version__ = "0.1.0"
