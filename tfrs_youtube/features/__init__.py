"""Features: the shared embedding tables, per-candidate context, the request contract.

The public names are re-exported from `tfrs_youtube`; this package holds one idea per module.
"""
