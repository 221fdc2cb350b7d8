"""digits: the torch-free core both sides share, and the `digits` command.

`digits.idx` (IDX files), `digits.atomic` (atomic file and directory writes), `digits.images`
(any picture -> MNIST pixels) and `digits.confusion` (confusion counts) need only numpy and
Pillow, so `serving/` and `pipeline/` use the same code. `digits.cli` is the command group.
"""

__version__ = "0.1.0"
