"""Graph planners, one per file; importing this package registers them (task="graph").

MP-VIN, Sym-MP-VIN, GAT-VIN and GCN-VIN-v2 share one shape: an encoder, a reward, K value-iteration
steps of a shared Q layer over [r, v] with v = max over Q channels, and a neighbour-scoring read-out
(``_readout.py``) that gives logits over N, W, S, E or a continuous (dy, dx) move vector.
"""

from diffplan.models.graph.mp_vin import MPVIN

__all__ = ["MPVIN"]
