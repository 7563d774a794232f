"""Planners, one per file under grid/ and graph/, built by name through the registry."""

from diffplan.models._registry import create_model, get_model_entry, list_models, register_model

__all__ = ["create_model", "get_model_entry", "list_models", "register_model"]
