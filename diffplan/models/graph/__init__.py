"""Graph planners, one per file; importing this package registers them (task="graph").

MP-VIN, Sym-MP-VIN, GAT-VIN and GCN-VIN-v2 share one shape: an encoder, a reward, K value-iteration
steps of a shared Q layer over [r, v] with v = max over Q channels, and a neighbour-scoring read-out
(``_readout.py``) that gives logits over N, W, S, E or a continuous (dy, dx) move vector.
"""

from diffplan.models.graph.gat_vin import GATVIN
from diffplan.models.graph.gcn_vin_v2 import GCNVINv2
from diffplan.models.graph.mp_vin import MPVIN
from diffplan.models.graph.sym_mp_vin import SymMPVIN

__all__ = ["GATVIN", "GCNVINv2", "MPVIN", "SymMPVIN"]
