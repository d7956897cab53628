"""Imports every built-in method so that its ``@register_method`` runs."""

from xmodal.methods import aeir, cca, crcgs, cusa, infonce, multitask, vse  # noqa: F401
