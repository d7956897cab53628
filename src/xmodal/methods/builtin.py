"""Imports every built-in method so that its ``@register_method`` runs."""

from xmodal.methods import (  # noqa: F401
    aeir,
    cca,
    crcgs,
    cusa,
    ensemble,
    infonce,
    multitask,
    selftrain,
    vse,
)
