"""Grid planners, one per file; importing this package registers them (VIN, SymVIN, DE-VIN, DE-SymVIN)."""

from diffplan.models.grid.de_symvin import DESymVIN
from diffplan.models.grid.de_vin import DEVIN
from diffplan.models.grid.symvin import SymVIN
from diffplan.models.grid.vin import VIN

__all__ = ["DESymVIN", "DEVIN", "SymVIN", "VIN"]
