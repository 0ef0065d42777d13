"""sol.quality"""
