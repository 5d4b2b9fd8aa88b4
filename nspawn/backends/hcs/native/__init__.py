"""ctypes bindings to the Windows Host Compute Service DLLs (simulated on Linux by tests/hcs_sim)."""
