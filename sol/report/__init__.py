"""sol.report"""
