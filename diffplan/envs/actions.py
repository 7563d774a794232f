"""Action mechanisms. Only `4abs-cc` exists for now (DESIGN section 3).

`4abs-cc`: four absolute moves in counter-clockwise order, as (dy, dx):
0 = N (-1, 0), 1 = W (0, -1), 2 = S (+1, 0), 3 = E (0, +1).
A move into a wall or off the map leaves the agent where it is.
Rotating a map 90 degrees counter-clockwise (`torch.rot90(x, 1, dims=(-2, -1))`) maps action a to
(a + 1) mod 4; a left-right flip swaps W and E; an up-down flip swaps N and S.
"""

from __future__ import annotations

import numpy as np

MECHANISM = "4abs-cc"
ACTION_NAMES: tuple[str, ...] = ("N", "W", "S", "E")
ACTION_DELTAS: np.ndarray = np.array([[-1, 0], [0, -1], [1, 0], [0, 1]], dtype=np.int64)  # (4, 2) (dy, dx)
NUM_ACTIONS = 4

# Action permutations under the symmetries of the square: new_action = PERM[old_action].
ROT90_ACTION_PERM = np.array([1, 2, 3, 0])
FLIP_LR_ACTION_PERM = np.array([0, 3, 2, 1])  # torch.flip(x, dims=(-1,)): W <-> E
FLIP_UD_ACTION_PERM = np.array([2, 1, 0, 3])  # torch.flip(x, dims=(-2,)): N <-> S
