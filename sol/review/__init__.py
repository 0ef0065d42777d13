"""sol.review"""
