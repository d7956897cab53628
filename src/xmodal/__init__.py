"""xmodal: cross-modal image–text retrieval.

The pipeline, one package per stage::

    datasets -> encoders -> features -> methods + training -> evaluation / index -> search
"""

__version__ = "0.1.0"
