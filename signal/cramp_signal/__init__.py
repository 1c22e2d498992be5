"""Pure NumPy/SciPy signal processing for crampwatch: causal filters, features, detector, metrics.

No I/O lives here: callers hand in arrays and get arrays or events back.
"""
