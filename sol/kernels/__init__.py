"""sol.kernels"""
