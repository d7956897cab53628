"""Imports every built-in method so that its ``@register_method`` runs."""

from xmodal.methods import cca, infonce, vse  # noqa: F401
