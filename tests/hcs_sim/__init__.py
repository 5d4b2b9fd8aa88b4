"""A C simulation of the Windows HCS DLLs for testing nspawn's ctypes bindings on Linux."""
