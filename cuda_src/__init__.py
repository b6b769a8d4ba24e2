"""CUDA C kernel sources, compiled at run time through PyCUDA (installed as axkern._cuda_src)."""
