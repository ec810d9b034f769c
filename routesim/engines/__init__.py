"""The engines: pure ``(init, step)`` pairs over (point, replica) axes.

Modules
-------
exact      every token drawn and routed (array code, or a compiled kernel)
meanfield  loads drawn from the expected-load map plus Gaussian fluctuations
learner    a router trained on a task proxy with balance penalties
kernels    compiled routing kernels (Numba on CPU, CUDA on GPU)
"""
