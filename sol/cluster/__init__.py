"""sol.cluster"""
