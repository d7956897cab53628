"""Imports every built-in method so that its ``@register_method`` runs."""

from xmodal.methods import aeir, cca, cusa, infonce, vse  # noqa: F401
