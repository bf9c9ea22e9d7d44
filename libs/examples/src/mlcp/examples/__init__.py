"""Example training entrypoints and demo data for mlcp (offline: data shipped by scikit-learn)."""
