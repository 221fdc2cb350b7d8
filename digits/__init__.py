"""digits: the torch-free core both sides share, and the `digits` command.

`digits.idx` (IDX files), `digits.npz` (prepared splits), `digits.atomic` (atomic file and
directory writes), `digits.images` (any picture -> MNIST pixels, pixel range checks) and
`digits.confusion` (confusion counts) need only numpy and Pillow, so `serving/` and `pipeline/`
use the same code. Their readers raise `digits.errors.DataError`, which `digits.cli`, the command
group, prints as one line.
"""

__version__ = "0.1.0"
