"""Imports every built-in method so that its ``@register_method`` runs."""

from xmodal.methods import aeir, cca, crcgs, cusa, ensemble, infonce, multitask, vse  # noqa: F401
