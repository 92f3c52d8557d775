"""What the tests compare against, and the inputs, layouts and checks several test modules share.

Policy: a reference is torch's own op (or a definition written from torch's documentation) run
on the same inputs upcast to float64; tests compare ours with ``torch.testing.assert_close``
and per-dtype tolerances. One module per op family; test modules import from here (``from
tests.references.pool import ...``), never from each other.
"""
