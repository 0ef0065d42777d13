"""sol.integrator"""
